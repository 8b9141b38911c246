using System.Text.Json;
using System.Text.Json.Serialization;
using SdAppliance.Models.Blocks;

namespace SdAppliance.Models.TextEncoders;

/// <summary>
/// The fields of a Hugging Face <c>CLIPTextConfig</c> (<c>text_encoder/config.json</c> of a
/// diffusers model) that decide the text transformer. Defaults are those of
/// <c>transformers.CLIPTextConfig</c>, so a config.json that leaves a field out means what it
/// means to the reference. Fields that do not change the network (dropout, initializer ranges,
/// torch_dtype) are ignored.
/// </summary>
public sealed record ClipTextConfig : IModelConfig
{
    public int VocabSize { get; init; } = 49408;
    public int HiddenSize { get; init; } = 512;
    public int IntermediateSize { get; init; } = 2048;
    public int ProjectionDim { get; init; } = 512;
    public int NumHiddenLayers { get; init; } = 12;
    public int NumAttentionHeads { get; init; } = 8;
    public int MaxPositionEmbeddings { get; init; } = 77;

    /// <summary><c>quick_gelu</c> (OpenAI CLIP), <c>gelu</c> (OpenCLIP, erf form), or <c>gelu_new</c>/<c>gelu_pytorch_tanh</c> (tanh form).</summary>
    public string HiddenAct { get; init; } = "quick_gelu";

    public double LayerNormEps { get; init; } = 1e-5;
    public long PadTokenId { get; init; } = 1;
    public long BosTokenId { get; init; } = 49406;
    public long EosTokenId { get; init; } = 49407;

    [JsonIgnore]
    public int HeadDim => HiddenSize / NumAttentionHeads;

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowReadingFromString,
    };

    public static ClipTextConfig FromJson(string json) =>
        JsonSerializer.Deserialize<ClipTextConfig>(json, JsonOptions)
        ?? throw new JsonException("a CLIP text config must be a JSON object, not null");

    /// <summary>Reads a <c>config.json</c> and checks its values; every refusal (<see cref="ModelConfigException"/>) names the file and the field.</summary>
    public static ClipTextConfig Load(string path) => DiffusersConfig.Load(path, text => JsonSerializer.Deserialize<ClipTextConfig>(text, JsonOptions));

    /// <inheritdoc/>
    public void CheckValues(string source)
    {
        var check = new ConfigChecks(source);
        check.Count("vocab_size", VocabSize, ConfigChecks.MaxVocabulary)
            .Count("hidden_size", HiddenSize, ConfigChecks.MaxChannels)
            .Count("intermediate_size", IntermediateSize, 8 * ConfigChecks.MaxChannels)
            .Count("projection_dim", ProjectionDim, ConfigChecks.MaxChannels)
            .Count("num_hidden_layers", NumHiddenLayers, ConfigChecks.MaxLayers)
            .Count("num_attention_heads", NumAttentionHeads, ConfigChecks.MaxHeads)
            .Divides("hidden_size", HiddenSize, "num_attention_heads", NumAttentionHeads)
            .Count("max_position_embeddings", MaxPositionEmbeddings, ConfigChecks.MaxSampleSize)
            .Positive("layer_norm_eps", LayerNormEps);
        // Token ids index the embedding table.
        foreach (var (field, id) in new[] { ("pad_token_id", PadTokenId), ("bos_token_id", BosTokenId), ("eos_token_id", EosTokenId) })
            if (id < 0 || id >= VocabSize)
                throw check.Refuse(field, $"is {id}, outside the vocabulary of vocab_size = {VocabSize} tokens");
    }

    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    // The released configurations, for checkpoints that carry no config.json (single files).
    // Token ids are the released files' legacy values: eos_token_id 2 makes the pooled position
    // the argmax of the ids, which is where <|endoftext|> (49407, the largest id) sits.

    /// <summary>OpenAI CLIP ViT-L/14's text tower: SD 1.x <c>text_encoder</c> and SDXL's <c>text_encoder</c>.</summary>
    public static ClipTextConfig ClipVitL14 { get; } = new()
    {
        HiddenSize = 768, IntermediateSize = 3072, ProjectionDim = 768, NumHiddenLayers = 12, NumAttentionHeads = 12,
        HiddenAct = "quick_gelu", PadTokenId = 1, BosTokenId = 0, EosTokenId = 2,
    };

    /// <summary>
    /// OpenCLIP ViT-H/14's text tower as SD 2.x's diffusers <c>text_encoder</c> stores it: 23 of
    /// the 24 blocks, because SD 2.x conditions on the penultimate block's output (through
    /// ln_final), which is this model's last_hidden_state.
    /// </summary>
    public static ClipTextConfig OpenClipVitH14Sd2 { get; } = new()
    {
        HiddenSize = 1024, IntermediateSize = 4096, ProjectionDim = 512, NumHiddenLayers = 23, NumAttentionHeads = 16,
        HiddenAct = "gelu", PadTokenId = 1, BosTokenId = 0, EosTokenId = 2,
    };

    /// <summary>OpenCLIP ViT-bigG/14's text tower, all 32 blocks, with projection: SDXL's <c>text_encoder_2</c>.</summary>
    public static ClipTextConfig OpenClipVitBigG14 { get; } = new()
    {
        HiddenSize = 1280, IntermediateSize = 5120, ProjectionDim = 1280, NumHiddenLayers = 32, NumAttentionHeads = 20,
        HiddenAct = "gelu", PadTokenId = 1, BosTokenId = 0, EosTokenId = 2,
    };
}
