using System.Text.Json;
using System.Text.Json.Serialization;
using SdAppliance.Models.Blocks;

namespace SdAppliance.Models.Unet;

/// <summary>
/// The <c>config.json</c> of a diffusers <c>UNet2DConditionModel</c>, with diffusers' defaults for
/// absent keys (SD 1.5's config predates many of them). Keys are snake_case in JSON; keys not
/// listed here are ignored when reading. Per-block settings accept one number or one per block.
/// Settings that change no module of the supported block types (e.g. <c>resnet_out_scale_factor</c>,
/// only used by block types this project does not build) are kept so the file round-trips.
/// </summary>
public sealed record UNet2DConditionConfig : IModelConfig
{
    [JsonConverter(typeof(NumberOrListConverter))]
    public IReadOnlyList<int>? SampleSize { get; init; }

    public int InChannels { get; init; } = 4;
    public int OutChannels { get; init; } = 4;
    public bool CenterInputSample { get; init; }
    public bool FlipSinToCos { get; init; } = true;
    public double FreqShift { get; init; }
    public IReadOnlyList<string> DownBlockTypes { get; init; } = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"];
    public string? MidBlockType { get; init; } = "UNetMidBlock2DCrossAttn";
    public IReadOnlyList<string> UpBlockTypes { get; init; } = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"];

    [JsonConverter(typeof(BoolOrListConverter))]
    public IReadOnlyList<bool> OnlyCrossAttention { get; init; } = [false];

    public IReadOnlyList<int> BlockOutChannels { get; init; } = [320, 640, 1280, 1280];

    [JsonConverter(typeof(NumberOrListConverter))]
    public IReadOnlyList<int> LayersPerBlock { get; init; } = [2];

    public int DownsamplePadding { get; init; } = 1;
    public double MidBlockScaleFactor { get; init; } = 1;
    public double Dropout { get; init; }
    public string ActFn { get; init; } = "silu";
    public int? NormNumGroups { get; init; } = 32;
    public double NormEps { get; init; } = 1e-5;

    [JsonConverter(typeof(NumberOrListConverter))]
    public IReadOnlyList<int> CrossAttentionDim { get; init; } = [1280];

    /// <summary>Transformer blocks per attention: one number, or per block a number or one per layer (see <see cref="DownTransformerDepths"/>).</summary>
    [JsonConverter(typeof(LayerDepthsConverter))]
    public IReadOnlyList<IReadOnlyList<int>> TransformerLayersPerBlock { get; init; } = [[1]];

    /// <summary>The up path's depths, per up block (deepest first), when they are not the down path's reversed (asymmetric UNets).</summary>
    [JsonConverter(typeof(LayerDepthsConverter))]
    public IReadOnlyList<IReadOnlyList<int>>? ReverseTransformerLayersPerBlock { get; init; }
    public int? EncoderHidDim { get; init; }
    public string? EncoderHidDimType { get; init; }

    /// <summary>Despite the name, the number of heads per block when <see cref="NumAttentionHeads"/> is null (a diffusers naming accident every SD config relies on).</summary>
    [JsonConverter(typeof(NumberOrListConverter))]
    public IReadOnlyList<int> AttentionHeadDim { get; init; } = [8];

    [JsonConverter(typeof(NumberOrListConverter))]
    public IReadOnlyList<int>? NumAttentionHeads { get; init; }

    public bool DualCrossAttention { get; init; }
    public bool UseLinearProjection { get; init; }
    public string? ClassEmbedType { get; init; }
    public string? AdditionEmbedType { get; init; }
    public int? AdditionTimeEmbedDim { get; init; }
    public int? NumClassEmbeds { get; init; }
    public bool? UpcastAttention { get; init; }
    public string ResnetTimeScaleShift { get; init; } = "default";
    public bool ResnetSkipTimeAct { get; init; }
    public double ResnetOutScaleFactor { get; init; } = 1.0;
    public string TimeEmbeddingType { get; init; } = "positional";
    public int? TimeEmbeddingDim { get; init; }
    public string? TimeEmbeddingActFn { get; init; }
    public string? TimestepPostAct { get; init; }
    public int? TimeCondProjDim { get; init; }
    public int ConvInKernel { get; init; } = 3;
    public int ConvOutKernel { get; init; } = 3;
    public int? ProjectionClassEmbeddingsInputDim { get; init; }
    public string AttentionType { get; init; } = "default";
    public bool ClassEmbeddingsConcat { get; init; }
    public bool? MidBlockOnlyCrossAttention { get; init; }
    public string? CrossAttentionNorm { get; init; }
    public int AdditionEmbedTypeNumHeads { get; init; } = 64;

    public static UNet2DConditionConfig Parse(string json) => DiffusersConfig.Parse<UNet2DConditionConfig>(json);

    public static UNet2DConditionConfig Load(string path) => DiffusersConfig.Load<UNet2DConditionConfig>(path);

    public string ToJson() => DiffusersConfig.ToJson(this);

    [JsonIgnore]
    public int NumBlocks => BlockOutChannels.Count;

    /// <summary>Heads per down block, by diffusers' rule <c>num_attention_heads or attention_head_dim</c>.</summary>
    [JsonIgnore]
    public int[] HeadsPerBlock => DiffusersConfig.PerBlock(NumAttentionHeads ?? AttentionHeadDim, NumBlocks, "num_attention_heads");

    [JsonIgnore]
    public int[] LayersPerBlockList => DiffusersConfig.PerBlock(LayersPerBlock, NumBlocks, "layers_per_block");
    [JsonIgnore]
    public int[] CrossAttentionDimPerBlock => DiffusersConfig.PerBlock(CrossAttentionDim, NumBlocks, "cross_attention_dim");

    /// <summary>
    /// The transformer depth of each attention of each down block ([block][layer]), by diffusers' rule: a number
    /// serves every block, a block's number every layer of it, a block's list gives one per layer.
    /// </summary>
    [JsonIgnore]
    public int[][] DownTransformerDepths => DownDepths(Unchecked);

    /// <summary>
    /// The transformer depth of each attention of each up block ([up block][layer], layers_per_block + 1 each):
    /// <c>reverse_transformer_layers_per_block</c> when given, else the down path's per-block values reversed.
    /// </summary>
    [JsonIgnore]
    public int[][] UpTransformerDepths => UpDepths(Unchecked);

    /// <summary>The mid block's depth: the last block's value (its first layer's, where that block lists one per layer), as diffusers passes it.</summary>
    [JsonIgnore]
    public int MidTransformerDepth => BlockDepths(Unchecked)[^1][0];

    private static ArgumentException Unchecked(string field, string problem) => new($"{field} {problem}");

    private IReadOnlyList<int>[] BlockDepths(Func<string, string, Exception> refuse) =>
        TransformerLayersPerBlock.Count == 1 ? Enumerable.Repeat(TransformerLayersPerBlock[0], NumBlocks).ToArray()
        : TransformerLayersPerBlock.Count == NumBlocks ? [.. TransformerLayersPerBlock]
        : throw refuse("transformer_layers_per_block", $"has {TransformerLayersPerBlock.Count} values for {NumBlocks} blocks; give one value, or one per block");

    private int[][] DownDepths(Func<string, string, Exception> refuse) =>
        PerLayer(BlockDepths(refuse), LayersPerBlockList, "transformer_layers_per_block", refuse);

    private int[][] UpDepths(Func<string, string, Exception> refuse)
    {
        var layersPerUpBlock = LayersPerBlockList.Reverse().Select(l => l + 1).ToArray();
        if (ReverseTransformerLayersPerBlock is { } reverse)
        {
            if (reverse.Count != NumBlocks)
                throw refuse("reverse_transformer_layers_per_block", $"has {reverse.Count} values for {NumBlocks} up blocks; give one per up block");
            return PerLayer([.. reverse], layersPerUpBlock, "reverse_transformer_layers_per_block", refuse);
        }
        var blocks = BlockDepths(refuse);
        if (blocks.Any(b => b.Count > 1))
            throw refuse("transformer_layers_per_block", "lists depths per layer, so the up path's cannot be derived from it; give reverse_transformer_layers_per_block too (one entry per up block)");
        return PerLayer([.. blocks.Reverse()], layersPerUpBlock, "transformer_layers_per_block", refuse);
    }

    private static int[][] PerLayer(IReadOnlyList<int>[] perBlock, int[] layers, string field, Func<string, string, Exception> refuse) =>
        [.. perBlock.Select((depths, i) =>
            depths.Count == 1 ? Enumerable.Repeat(depths[0], layers[i]).ToArray()
            : depths.Count == layers[i] ? [.. depths]
            : throw refuse($"{field}[{i}]", $"has {depths.Count} values for the {layers[i]} layers of that block; give one value, or one per layer"))];

    [JsonIgnore]
    public bool[] OnlyCrossAttentionPerBlock =>
        OnlyCrossAttention.Count == 1 ? Enumerable.Repeat(OnlyCrossAttention[0], NumBlocks).ToArray()
        : OnlyCrossAttention.Count == NumBlocks ? [.. OnlyCrossAttention]
        : throw new ArgumentException($"only_cross_attention has {OnlyCrossAttention.Count} values for {NumBlocks} blocks");

    /// <summary>Width of the time embedding the blocks receive (4 × the first block's channels unless set).</summary>
    [JsonIgnore]
    public int TimeEmbedDim => TimeEmbeddingDim ?? BlockOutChannels[0] * 4;

    /// <inheritdoc/>
    public void CheckValues(string source)
    {
        var check = new ConfigChecks(source);
        check.Length("block_out_channels", NumBlocks, ConfigChecks.MaxBlocks)
            .Counts("block_out_channels", BlockOutChannels, ConfigChecks.MaxChannels)
            .OnePerBlock("down_block_types", DownBlockTypes.Count, NumBlocks)
            .OnePerBlock("up_block_types", UpBlockTypes.Count, NumBlocks)
            .Count("in_channels", InChannels, ConfigChecks.MaxChannels)
            .Count("out_channels", OutChannels, ConfigChecks.MaxChannels)
            .Count("conv_in_kernel", ConvInKernel, 15)
            .Count("conv_out_kernel", ConvOutKernel, 15)
            .Positive("norm_eps", NormEps);
        var headsField = NumAttentionHeads is null ? "attention_head_dim" : "num_attention_heads";
        var heads = NumAttentionHeads ?? AttentionHeadDim;
        foreach (var (field, values, max) in new[]
        {
            ("layers_per_block", LayersPerBlock, ConfigChecks.MaxLayers),
            ("cross_attention_dim", CrossAttentionDim, ConfigChecks.MaxChannels),
            (headsField, heads, ConfigChecks.MaxHeads),
        })
            check.PerBlock(field, values.Count, NumBlocks).Counts(field, values, max);
        check.PerBlock("only_cross_attention", OnlyCrossAttention.Count, NumBlocks);
        if (TransformerLayersPerBlock.Count == 0)
            throw check.Refuse("transformer_layers_per_block", "is an empty list");
        foreach (var (field, depths) in new[] { ("transformer_layers_per_block", TransformerLayersPerBlock), ("reverse_transformer_layers_per_block", ReverseTransformerLayersPerBlock ?? []) })
            for (var i = 0; i < depths.Count; i++)
                check.Counts(depths.Count == 1 ? field : $"{field}[{i}]", depths[i], ConfigChecks.MaxLayers);
        _ = DownDepths(check.Refuse);
        _ = UpDepths(check.Refuse);
        if (SampleSize is not null)
            check.Counts("sample_size", SampleSize, ConfigChecks.MaxSampleSize);
        foreach (var (field, value) in new[] { ("time_embedding_dim", TimeEmbeddingDim), ("addition_time_embed_dim", AdditionTimeEmbedDim),
                     ("projection_class_embeddings_input_dim", ProjectionClassEmbeddingsInputDim) })
            if (value is { } v) check.Count(field, v, 8 * ConfigChecks.MaxChannels);
        if (NormNumGroups is { } groups)
        {
            check.Count("norm_num_groups", groups, ConfigChecks.MaxChannels);
            for (var i = 0; i < NumBlocks; i++)
                check.Divides($"block_out_channels[{i}]", BlockOutChannels[i], "norm_num_groups", groups);
        }
        // Attention splits a block's channels into its heads: the cross-attention blocks' and the mid block's (the last block's heads).
        var headsPerBlock = HeadsPerBlock;
        for (var i = 0; i < NumBlocks; i++)
            if (DownBlockTypes[i] == "CrossAttnDownBlock2D" || (i == NumBlocks - 1 && MidBlockType == "UNetMidBlock2DCrossAttn"))
                check.Divides($"block_out_channels[{i}]", BlockOutChannels[i], heads.Count == 1 ? headsField : $"{headsField}[{i}]", headsPerBlock[i]);
    }

    /// <summary>
    /// Throws <see cref="NotSupportedException"/> naming the first setting this implementation does
    /// not build (class embeddings, encoder projections, other block types...), so an exotic model
    /// fails at load time rather than computing something else.
    /// </summary>
    public void Validate()
    {
        static void Require(bool ok, string what)
        {
            if (!ok) throw new NotSupportedException($"UNet2DConditionModel config: {what} is not supported");
        }
        if (DownBlockTypes.Count != UpBlockTypes.Count || DownBlockTypes.Count != NumBlocks)
            throw new ArgumentException($"down_block_types ({DownBlockTypes.Count}), up_block_types ({UpBlockTypes.Count}) and block_out_channels ({NumBlocks}) must have the same length");
        foreach (var t in DownBlockTypes) Require(t is "CrossAttnDownBlock2D" or "DownBlock2D", $"down block type '{t}'");
        foreach (var t in UpBlockTypes) Require(t is "CrossAttnUpBlock2D" or "UpBlock2D", $"up block type '{t}'");
        Require(MidBlockType is null or "UNetMidBlock2DCrossAttn" or "UNetMidBlock2D", $"mid_block_type '{MidBlockType}'");
        Require(TimeEmbeddingType == "positional", $"time_embedding_type '{TimeEmbeddingType}'");
        Require(AdditionEmbedType is null or "text_time", $"addition_embed_type '{AdditionEmbedType}'");
        Require(AdditionEmbedType != "text_time" || (AdditionTimeEmbedDim is not null && ProjectionClassEmbeddingsInputDim is not null),
            "addition_embed_type 'text_time' without addition_time_embed_dim and projection_class_embeddings_input_dim");
        Require(ClassEmbedType is null && NumClassEmbeds is null, "a class embedding");
        Require(!ClassEmbeddingsConcat, "class_embeddings_concat");
        Require(EncoderHidDim is null && EncoderHidDimType is null, "encoder_hid_dim (an encoder projection)");
        Require(ResnetTimeScaleShift == "default", $"resnet_time_scale_shift '{ResnetTimeScaleShift}'");
        Require(AttentionType == "default", $"attention_type '{AttentionType}'");
        Require(!DualCrossAttention, "dual_cross_attention");
        Require(CrossAttentionNorm is null, "cross_attention_norm");
        Require(TimeEmbeddingActFn is null, "time_embedding_act_fn");
        Require(TimestepPostAct is null, "timestep_post_act");
        Require(NormNumGroups is not null, "norm_num_groups null");
        Require(ConvInKernel % 2 == 1 && ConvOutKernel % 2 == 1, "an even conv_in/conv_out kernel");
        Activation.Check(ActFn);
        _ = HeadsPerBlock;
        _ = LayersPerBlockList;
        _ = CrossAttentionDimPerBlock;
        _ = DownTransformerDepths;
        _ = UpTransformerDepths;
        _ = OnlyCrossAttentionPerBlock;
    }
}
