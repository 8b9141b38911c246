using SdAppliance.Formats;
using System.Globalization;
using System.Reflection;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace SdAppliance.Training;

/// <summary>
/// One training run, as <c>run.json</c> holds it (snake_case, the names kohya sd-scripts and the
/// diffusers scripts use); every field is also a <c>sdapp train</c> flag (<c>--network-dim 16</c>).
/// Defaults are those of the diffusers/kohya scripts where they agree.
/// </summary>
public sealed record TrainingConfig
{
    /// <summary>lora, dreambooth, textual-inversion, finetune or hypernetwork.</summary>
    public string Method { get; init; } = "lora";
    /// <summary>A recipe (see <see cref="TrainingPresets"/>) whose values apply before the file's and the flags'.</summary>
    public string? Preset { get; init; }
    public string? Model { get; init; }
    /// <summary>The images (and captions, kohya's N_name repeat folders).</summary>
    public string? Data { get; init; }
    /// <summary>The run folder: config, log, checkpoints, samples and the results.</summary>
    public string? Output { get; init; }
    /// <summary>A JSON concepts list: [{"instance_prompt", "class_prompt", "instance_data_dir", "class_data_dir"}].</summary>
    public string? Concepts { get; init; }
    public string? OutputName { get; init; }

    // ---- data ----
    public string? InstancePrompt { get; init; }
    public string? ClassPrompt { get; init; }
    public string? ClassData { get; init; }
    public int NumClassImages { get; init; }
    public double PriorLossWeight { get; init; } = 1.0;
    public string CaptionExtension { get; init; } = ".txt";
    public int Resolution { get; init; } = 512;
    public bool CenterCrop { get; init; } = true;
    public bool EnableBucket { get; init; }
    public int MinBucketReso { get; init; } = 256;
    public int MaxBucketReso { get; init; } = 1024;
    public bool FlipAug { get; init; }
    public bool ShuffleCaption { get; init; }
    public int KeepTokens { get; init; }
    public double CaptionDropoutRate { get; init; }
    public bool CacheLatents { get; init; } = true;
    public bool CacheLatentsToDisk { get; init; }

    // ---- the loop ----
    public int TrainBatchSize { get; init; } = 1;
    public int GradientAccumulationSteps { get; init; } = 1;
    public int MaxTrainSteps { get; init; } = 1000;
    public double LearningRate { get; init; } = 1e-4;
    public double? TextEncoderLr { get; init; }
    public string LrScheduler { get; init; } = "constant";
    public int LrWarmupSteps { get; init; }
    public double LrNumCycles { get; init; } = 1;
    public double LrPower { get; init; } = 1;
    public string Optimizer { get; init; } = "AdamW";
    public double AdamBeta1 { get; init; } = 0.9;
    public double AdamBeta2 { get; init; } = 0.999;
    public double AdamWeightDecay { get; init; } = 1e-2;
    public double AdamEpsilon { get; init; } = 1e-8;
    public double MaxGradNorm { get; init; } = 1.0;
    public double? MinSnrGamma { get; init; }
    public double NoiseOffset { get; init; }
    public string MixedPrecision { get; init; } = "no";
    public bool GradientCheckpointing { get; init; }
    public int ClipSkip { get; init; } = 1;
    public long Seed { get; init; } = 42;
    public string Device { get; init; } = "cpu";

    // ---- methods ----
    public int NetworkDim { get; init; } = 16;
    public double NetworkAlpha { get; init; } = 8;
    public double NetworkDropout { get; init; }
    public int? ConvDim { get; init; }
    public double? ConvAlpha { get; init; }
    public bool TrainTextEncoder { get; init; }
    public string? PlaceholderToken { get; init; }
    public string? InitializerToken { get; init; }
    public int NumVectors { get; init; } = 1;
    public string HypernetworkLayerStructure { get; init; } = "1,2,1";
    public string HypernetworkActivation { get; init; } = "linear";
    public bool UseEma { get; init; } = true;
    public double EmaDecay { get; init; } = 0.9999;

    // ---- saving and watching ----
    public int? SaveEveryNSteps { get; init; }
    public int SaveLastK { get; init; } = 3;
    public int? SampleEveryNSteps { get; init; }
    /// <summary>Prompts for the sample images (kohya's --sample_prompts); default: the instance prompt or the first captions.</summary>
    public IReadOnlyList<string> SamplePrompts { get; init; } = [];
    public long SampleSeed { get; init; } = 1234;
    public int SampleSteps { get; init; } = 20;
    public string SampleSampler { get; init; } = "Euler a";
    public bool SaveFp16 { get; init; }
    public bool SaveDiffusers { get; init; }

    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    };

    public static readonly IReadOnlyList<string> Methods = ["lora", "dreambooth", "textual-inversion", "finetune", "hypernetwork"];

    public static TrainingConfig Load(string path)
    {
        try
        {
            return JsonSerializer.Deserialize<TrainingConfig>(File.ReadAllText(path), Json) ?? throw new TrainingConfigException($"'{path}' is empty");
        }
        catch (JsonException e)
        {
            throw new TrainingConfigException($"'{path}' is not a valid training config: {e.Message}");
        }
    }

    public string ToJson() => JsonSerializer.Serialize(this, Json);

    /// <summary>The config file field name of a property (network_dim), also the flag name with dashes (--network-dim).</summary>
    public static string FieldName(PropertyInfo property) => JsonNamingPolicy.SnakeCaseLower.ConvertName(property.Name);

    public static IReadOnlyList<PropertyInfo> Fields { get; } =
        [.. typeof(TrainingConfig).GetProperties(BindingFlags.Public | BindingFlags.Instance).Where(p => p.CanWrite)];

    /// <summary>This config with <paramref name="values"/> (field name → text) applied, as flags override the file.</summary>
    public TrainingConfig With(IReadOnlyDictionary<string, string> values)
    {
        var json = JsonSerializer.SerializeToNode(this, Json)!.AsObject();
        foreach (var (name, text) in values)
        {
            var field = Fields.FirstOrDefault(f => FieldName(f) == name)
                ?? throw new TrainingConfigException($"unknown setting '{name}'; valid ones: {string.Join(", ", Fields.Select(FieldName))}");
            json[name] = Parse(field, name, text);
        }
        return json.Deserialize<TrainingConfig>(Json)!;
    }

    private static System.Text.Json.Nodes.JsonNode? Parse(PropertyInfo field, string name, string text)
    {
        var type = Nullable.GetUnderlyingType(field.PropertyType) ?? field.PropertyType;
        try
        {
            if (type == typeof(string)) return text;
            if (type == typeof(bool)) return text.Length == 0 || bool.Parse(text);
            if (type == typeof(int)) return int.Parse(text, CultureInfo.InvariantCulture);
            if (type == typeof(long)) return long.Parse(text, CultureInfo.InvariantCulture);
            if (type == typeof(double)) return double.Parse(text, CultureInfo.InvariantCulture);
            if (type == typeof(IReadOnlyList<string>)) return new System.Text.Json.Nodes.JsonArray([.. text.Split('|').Select(s => (System.Text.Json.Nodes.JsonNode)s.Trim())]);
        }
        catch (FormatException)
        {
        }
        throw new TrainingConfigException($"{name}: '{text}' is not a valid {type.Name.ToLowerInvariant()}");
    }

    /// <summary>Checks every setting before any work starts; the message names the field and the fix.</summary>
    public void Validate()
    {
        void Require(bool ok, string message)
        {
            if (!ok) throw new TrainingConfigException(message);
        }
        Require(Methods.Contains(Method), $"method: '{Method}' is not one of {string.Join(", ", Methods)}");
        Require(!string.IsNullOrWhiteSpace(Output), "output: give the run folder (--output DIR)");
        Require(Data is not null || Concepts is not null, "data: give the image folder (--data DIR) or a concepts list (--concepts FILE)");
        Require(Resolution >= 64 && Resolution % 8 == 0, $"resolution: {Resolution} must be a multiple of 8 and at least 64");
        Require(TrainBatchSize >= 1, $"train_batch_size: {TrainBatchSize} must be at least 1");
        Require(GradientAccumulationSteps >= 1, $"gradient_accumulation_steps: {GradientAccumulationSteps} must be at least 1");
        Require(MaxTrainSteps >= 1, $"max_train_steps: {MaxTrainSteps} must be at least 1");
        Require(LearningRate > 0, $"learning_rate: {LearningRate} must be positive");
        Require(MaxGradNorm >= 0, $"max_grad_norm: {MaxGradNorm} must be zero (off) or positive");
        Require(Optimizers.Contains(Optimizer, StringComparer.OrdinalIgnoreCase), $"optimizer: '{Optimizer}' is not one of {string.Join(", ", Optimizers)}");
        Require(Torch.Optim.LrSchedule.Names.Contains(LrScheduler), $"lr_scheduler: '{LrScheduler}' is not one of {string.Join(", ", Torch.Optim.LrSchedule.Names)}");
        Require(MixedPrecision is "no" or "fp16" or "bf16", $"mixed_precision: '{MixedPrecision}' is not one of no, fp16, bf16");
        Require(ClipSkip >= 1, $"clip_skip: {ClipSkip} counts from 1 (the last layer)");
        Require(PriorLossWeight >= 0, $"prior_loss_weight: {PriorLossWeight} must not be negative");
        Require(ClassPrompt is null || ClassData is not null || Concepts is not null,
            "class_data: a class prompt (prior preservation) needs a folder for the class images (--class-data DIR); missing ones are generated there");
        Require(NumClassImages >= 0, $"num_class_images: {NumClassImages} must not be negative");
        Require(CaptionDropoutRate is >= 0 and <= 1, $"caption_dropout_rate: {CaptionDropoutRate} must be in [0, 1]");
        Require(SaveEveryNSteps is null or >= 1, $"save_every_n_steps: {SaveEveryNSteps} must be at least 1");
        Require(SampleEveryNSteps is null or >= 1, $"sample_every_n_steps: {SampleEveryNSteps} must be at least 1");
        Require(SaveLastK >= 1, $"save_last_k: {SaveLastK} must be at least 1");
        switch (Method)
        {
            case "lora":
                Require(NetworkDim >= 1, $"network_dim: {NetworkDim} must be at least 1 (the LoRA rank)");
                Require(NetworkAlpha >= 0, $"network_alpha: {NetworkAlpha} must not be negative");
                Require(ConvDim is null or >= 1, $"conv_dim: {ConvDim} must be at least 1");
                break;
            case "textual-inversion":
                Require(!string.IsNullOrWhiteSpace(PlaceholderToken), "placeholder_token: textual inversion needs the new word (--placeholder-token zwx)");
                Require(!string.IsNullOrWhiteSpace(InitializerToken), "initializer_token: textual inversion needs a word to start from (--initializer-token shape)");
                Require(NumVectors >= 1, $"num_vectors: {NumVectors} must be at least 1");
                break;
            case "hypernetwork":
                var layers = HypernetworkLayerStructure.Split(',');
                Require(layers.Length >= 2 && layers.All(l => double.TryParse(l, CultureInfo.InvariantCulture, out var v) && v > 0)
                    && layers[0].Trim() == "1" && layers[^1].Trim() == "1",
                    $"hypernetwork_layer_structure: '{HypernetworkLayerStructure}' must be positive numbers starting and ending with 1, e.g. 1,2,1");
                break;
        }
    }

    public static readonly IReadOnlyList<string> Optimizers = ["AdamW", "Adam", "SGD", "Lion", "Adafactor"];
}

/// <summary>A run setting cannot be used; the message names the field.</summary>
public sealed class TrainingConfigException(string message) : UserInputException(message, null, message, null, null);
