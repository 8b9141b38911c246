using System.ComponentModel;
using System.Globalization;
using System.Reflection;
using System.Text.Json;
using System.Text.RegularExpressions;
using System.Text.Json.Serialization;
using SdAppliance.Formats;
using SdAppliance.Formats.Adapters;

namespace SdAppliance.Training;

/// <summary>
/// One training run, as <c>run.json</c> holds it (snake_case, the names kohya sd-scripts and the
/// diffusers scripts use); each field carries its one-line <see cref="DescriptionAttribute"/>, which the front ends show
/// (the CLI makes every field a flag).
/// Defaults are those of the diffusers/kohya scripts where they agree.
/// </summary>
public sealed record TrainingConfig
{
    [Description("What to train: LoRA, DreamBooth (full UNet), textual inversion, full fine-tune (EMA) or a hypernetwork")]
    public string Method { get; init; } = "lora";
    [Description("A recipe applied before the config file and the other settings (docs/training.md: Presets)")]
    public string? Preset { get; init; }
    [Description("The base model: a diffusers folder or a .safetensors/.ckpt file (default: models/demo when present)")]
    public string? Model { get; init; }
    [Description("A VAE used in place of the model's own, to encode the images, draw the samples and go into whole-model exports: a .safetensors/.pt/.ckpt VAE file or a diffusers VAE folder (kohya's vae option)")]
    public string? Vae { get; init; }
    [Description("The image folder: captions in same-name .txt files, kohya N_name sub-folders repeat N times")]
    public string? Data { get; init; }
    [Description("The run folder: run.json, log, checkpoints, samples, report and the results")]
    public string? Output { get; init; }
    [Description("A DreamBooth concepts list (JSON: instance_prompt, class_prompt, instance_data_dir, class_data_dir)")]
    public string? Concepts { get; init; }
    [Description("kohya's dataset config TOML ([general], [[datasets]] with [[datasets.subsets]]: image_dir, num_repeats, class_tokens, is_reg...) instead of data; its settings override the run's")]
    public string? DatasetConfig { get; init; }
    [Description("The results' file name (default: the run folder's name)")]
    public string? OutputName { get; init; }

    // ---- data ----
    [Description("The caption of images without a caption file (DreamBooth: \"a photo of sks dog\")")]
    public string? InstancePrompt { get; init; }
    [Description("Prior preservation: the class prompt (\"a photo of a dog\"); missing class images are generated with it")]
    public string? ClassPrompt { get; init; }
    [Description("Prior preservation: the folder of class images (generated there when fewer than num_class_images)")]
    public string? ClassData { get; init; }
    [Description("Prior preservation: how many class images to use (and generate when missing)")]
    public int NumClassImages { get; init; }
    [Description("Prior preservation: the weight of the class images' loss")]
    public double PriorLossWeight { get; init; } = 1.0;
    [Description("The caption files' extension")]
    public string CaptionExtension { get; init; } = ".txt";
    [Description("A folder with a metadata.jsonl or Parquet files (the Hugging Face layouts the diffusers scripts read): the column holding each image's caption")]
    public string CaptionColumn { get; init; } = "text";
    [Description("A folder of Parquet files (the Hugging Face hub's layout): the column holding each row's image, a struct of bytes and path or plain bytes")]
    public string ImageColumn { get; init; } = "image";
    [Description("An image without a caption takes its file name (without the extension) as its caption, instead of the folder's or instance prompt")]
    public bool UseFilenameAsLabel { get; init; }
    [Description("Training size in pixels (square; the bucket area with enable_bucket)")]
    public int Resolution { get; init; } = 512;
    [Description("Crop the center (false: a random window each time)")]
    public bool CenterCrop { get; init; } = true;
    [Description("Aspect-ratio bucketing: each image trains at the bucket nearest its aspect ratio")]
    public bool EnableBucket { get; init; }
    [Description("Bucketing: the smallest side of a bucket")]
    public int MinBucketReso { get; init; } = 256;
    [Description("Bucketing: the largest side of a bucket")]
    public int MaxBucketReso { get; init; } = 1024;
    [Description("Randomly mirror images horizontally")]
    public bool FlipAug { get; init; }
    [Description("Shuffle the comma-separated caption tags each time")]
    public bool ShuffleCaption { get; init; }
    [Description("Caption shuffle leaves the first N tags in place")]
    public int KeepTokens { get; init; }
    [Description("The share of examples trained with an empty caption")]
    public double CaptionDropoutRate { get; init; }
    [Description("Encode each image with the VAE once and keep its latents (default: when center_crop; a random crop cannot be cached)")]
    public bool? CacheLatents { get; init; }
    [Description("Keep the latent cache on disk next to the images too (edits invalidate it)")]
    public bool CacheLatentsToDisk { get; init; }
    [Description("Weight the loss per pixel by a mask: from conditioning_data_dir, or from the images' alpha channel with alpha_mask")]
    public bool MaskedLoss { get; init; }
    [Description("masked_loss: the folder of masks, each named as its image (any image extension) and of its size; the red channel weighs each pixel (black 0, white 1)")]
    public string? ConditioningDataDir { get; init; }
    [Description("Weight the loss by each image's alpha channel (transparent 0, opaque 1; an image without one weighs 1 everywhere)")]
    public bool AlphaMask { get; init; }

    // ---- the loop ----
    [Description("Images per batch")]
    public int TrainBatchSize { get; init; } = 1;
    [Description("Batches per optimizer step")]
    public int GradientAccumulationSteps { get; init; } = 1;
    [Description("Optimizer steps to train (on resume: the new total)")]
    public int MaxTrainSteps { get; init; } = 1000;
    [Description("Epochs to train instead of max_train_steps: each image times its repeats once per epoch, as kohya counts them")]
    public int? MaxTrainEpochs { get; init; }
    [Description("The learning rate (the UNet's, or the embedding's for textual inversion)")]
    public double LearningRate { get; init; } = 1e-4;
    [Description("The text encoder's learning rate when it trains (default: learning_rate)")]
    public double? TextEncoderLr { get; init; }
    [Description("Multiply learning_rate by train_batch_size x gradient_accumulation_steps, as the diffusers scripts' scale_lr (a given text_encoder_lr stays as it is)")]
    public bool ScaleLr { get; init; }
    [Description("LR schedule")]
    public string LrScheduler { get; init; } = "constant";
    [Description("Steps of linear warmup at the start")]
    public int LrWarmupSteps { get; init; }
    [Description("Restarts of cosine_with_restarts")]
    public double LrNumCycles { get; init; } = 1;
    [Description("The power of the polynomial schedule")]
    public double LrPower { get; init; } = 1;
    [Description("The optimizer (kohya's optimizer_type); AdamW8bit and Lion8bit keep their moments in 8 bits, a quarter of the memory")]
    public string Optimizer { get; init; } = "AdamW";
    [Description("The diffusers scripts' use_8bit_adam: AdamW8bit in place of AdamW")]
    [JsonPropertyName("use_8bit_adam")]
    public bool Use8BitAdam { get; init; }
    [Description("Adam/AdamW/Prodigy beta1")]
    public double AdamBeta1 { get; init; } = 0.9;
    [Description("Adam/AdamW/Prodigy beta2")]
    public double AdamBeta2 { get; init; } = 0.999;
    [Description("AdamW/Lion/Prodigy weight decay")]
    public double AdamWeightDecay { get; init; } = 1e-2;
    [Description("Adam/AdamW/Prodigy epsilon")]
    public double AdamEpsilon { get; init; } = 1e-8;
    [Description("Prodigy: scales its estimated step size (2 or 10 for larger steps, 0.5 or 0.1 for smaller); learning_rate stays 1")]
    public double DCoef { get; init; } = 1;
    [Description("Prodigy: Adam's bias correction of the step size")]
    public bool UseBiasCorrection { get; init; }
    [Description("Prodigy: keep the warmup's small learning rate out of the estimate, which it would otherwise inflate")]
    public bool SafeguardWarmup { get; init; }
    [Description("Clip the gradient norm to this (0: no clipping)")]
    public double MaxGradNorm { get; init; } = 1.0;
    [Description("Min-SNR-gamma loss weighting (5 is the paper's value; off when not given)")]
    public double? MinSnrGamma { get; init; }
    [Description("Noise offset (0.05-0.1 helps very dark and bright images)")]
    public double NoiseOffset { get; init; }
    [Description("Multi-resolution (pyramid) noise: add this many coarser noise layers to the noise, as kohya's pyramid noise (6-10 is usual; off when not given)")]
    public int? MultiresNoiseIterations { get; init; }
    [Description("Multi-resolution noise: each coarser layer's weight is this times the one before (kohya's default 0.3)")]
    public double MultiresNoiseDiscount { get; init; } = 0.3;
    [Description("Input perturbation noise: the noisy latents are made from noise + ip_noise_gamma x new noise, while the target stays the first noise (0.1 is usual; 0: off)")]
    public double IpNoiseGamma { get; init; }
    [Description("The loss: l2 (mean squared error), l1, huber or smooth_l1 (pseudo-Huber; their threshold follows huber_schedule)")]
    public string LossType { get; init; } = "l2";
    [Description("huber and smooth_l1: how the threshold follows the timestep: snr (kohya's default), exponential or constant (huber_c throughout)")]
    public string HuberSchedule { get; init; } = "snr";
    [Description("huber and smooth_l1: the threshold (constant), the threshold at the last timestep (exponential) or the least one (snr)")]
    public double HuberC { get; init; } = 0.1;
    [Description("huber and smooth_l1: multiplies the constant and exponential thresholds (kohya's default 1)")]
    public double HuberScale { get; init; } = 1.0;
    [Description("v-prediction models: weight each example's loss by SNR/(SNR+1), so the timesteps weigh as in an epsilon model")]
    public bool ScaleVPredLossLikeNoisePred { get; init; }
    [Description("Rescale the training noise schedule to zero terminal SNR (the last timestep is pure noise); for v-prediction models only")]
    public bool ZeroTerminalSnr { get; init; }
    [Description("Autocast on CUDA: bf16, or fp16 with loss scaling (CPU: no or bf16)")]
    public string MixedPrecision { get; init; } = "no";
    [Description("Recompute UNet activations in the backward pass: less memory, slower")]
    public bool GradientCheckpointing { get; init; }
    [Description("1 = the text encoder's last layer, 2 = the penultimate (A1111 numbering)")]
    public int ClipSkip { get; init; } = 1;
    [Description("Seed of everything: data order, augmentation, noise, timesteps")]
    public long Seed { get; init; } = 42;
    [Description("cpu, cuda or cuda:N")]
    [JsonPropertyName("device")]
    public string DeviceName { get; init; } = "cpu";
    [Description("Stop the run when the loss becomes NaN or infinite (the weights are lost by then); false trains on regardless")]
    public bool StopOnNan { get; init; } = true;

    // ---- data parallel (accelerate launch's names) ----
    [Description("Ranks on each machine, each with its own device (as accelerate launch's option of this name): each trains on train_batch_size images of every step, so a step takes num_processes x num_machines x train_batch_size images")]
    public int NumProcesses { get; init; } = 1;
    [Description("Machines the run spans, each running num_processes ranks (as accelerate launch's option of this name); the run folder must be on storage they all see")]
    public int NumMachines { get; init; } = 1;
    [Description("The address of the main machine, where rank 0 hosts the rendezvous (as accelerate launch's option of this name)")]
    public string MainProcessIp { get; init; } = "127.0.0.1";
    [Description("The rendezvous port on the main machine (as accelerate launch's option of this name)")]
    public int MainProcessPort { get; init; } = 29500;
    [Description("This machine's CUDA devices for its ranks, comma-separated indices (local rank i trains on the i-th); default 0, 1, ... when device is cuda")]
    public string? Devices { get; init; }
    [Description("The process group's backend: gloo (CPU) or nccl (CUDA); default nccl on cuda, else gloo")]
    public string? DdpBackend { get; init; }
    [Description("Minutes a rank waits for the others (the rendezvous, a gradient all-reduce) before it stops, naming the ranks that did not answer (as kohya's option of this name)")]
    public double DdpTimeout { get; init; } = 30;
    [Description("Size in MiB of the gradient buckets all-reduced during backward (DistributedDataParallel's bucket_cap_mb)")]
    public double DdpBucketCapMb { get; init; } = 25;

    // ---- methods ----
    [Description("LoRA rank")]
    public int NetworkDim { get; init; } = 16;
    [Description("LoRA alpha (the update is scaled by alpha/rank)")]
    public double NetworkAlpha { get; init; } = 8;
    [Description("LoRA dropout")]
    public double NetworkDropout { get; init; }
    [Description("LoCon: also train the 3x3 convolutions, at this rank")]
    public int? ConvDim { get; init; }
    [Description("LoCon alpha (default: 1, as kohya)")]
    public double? ConvAlpha { get; init; }
    [Description("The adapter: lora (kohya's networks.lora), or LyCORIS's loha (Hadamard product of two low-rank products) or lokr (Kronecker product), as network_module lycoris.kohya with network_args algo=loha|lokr; network_dim, network_alpha, conv_dim and conv_alpha set their ranks")]
    public string NetworkAlgo { get; init; } = "lora";
    [Description("LoKr: LyCORIS's factor, the largest smaller side when each weight is split into two Kronecker factors (-1: the split nearest the square root)")]
    public int LokrFactor { get; init; } = -1;
    [Description("LoKr: LyCORIS's decompose_both, the smaller Kronecker factor low-rank too")]
    public bool LokrDecomposeBoth { get; init; }
    [Description("LoHa/LoKr: LyCORIS's use_tucker, the factors of the 3x3 convolutions as Tucker decompositions (the file gains hada_t1/hada_t2 or lokr_t2)")]
    public bool UseTucker { get; init; }
    [Description("DoRA: LyCORIS's dora_wd, a learned magnitude for each input column beside the LoRA, LoHa or LoKr delta (the file gains dora_scale keys)")]
    public bool DoraWd { get; init; }
    [Description("LoRA+: the lora_up matrices train at this many times the learning rate, in an optimizer group of their own (the paper suggests 16)")]
    public double? LoraplusLrRatio { get; init; }
    [Description("LoRA+: the UNet's ratio (default: loraplus_lr_ratio)")]
    public double? LoraplusUnetLrRatio { get; init; }
    [Description("LoRA+: the text encoder's ratio (default: loraplus_lr_ratio)")]
    public double? LoraplusTextEncoderLrRatio { get; init; }
    [Description("Block-wise LR: the learning-rate weights of the UNet's 12 down blocks IN00-IN11 (SDXL: 9), comma-separated (missing ones are 1), or a preset cosine, sine, linear, reverse_linear or zeros, which may add a number (sine+0.5)")]
    public string? DownLrWeight { get; init; }
    [Description("Block-wise LR: the weight of the middle block (SDXL: 3 comma-separated weights)")]
    public string? MidLrWeight { get; init; }
    [Description("Block-wise LR: the weights of the 12 up blocks OUT00-OUT11 (SDXL: 9), as down_lr_weight")]
    public string? UpLrWeight { get; init; }
    [Description("Block-wise LR: a weight at or under this becomes 0, and a block of weight 0 gets no modules")]
    public double BlockLrZeroThreshold { get; init; }
    [Description("Block-wise ranks: one rank per UNet block, comma-separated (25: IN00-IN11, MID, OUT00-OUT11; SDXL 23); 0 leaves a block out")]
    public string? BlockDims { get; init; }
    [Description("Block-wise alphas beside block_dims (default: network_alpha for every block)")]
    public string? BlockAlphas { get; init; }
    [Description("Block-wise ranks of the 3x3 convolutions (LoCon), as block_dims (default: conv_dim for every block)")]
    public string? ConvBlockDims { get; init; }
    [Description("Block-wise alphas beside conv_block_dims (default: conv_alpha for every block)")]
    public string? ConvBlockAlphas { get; init; }
    [Description("LoRA and DreamBooth: train the text encoder(s) too")]
    public bool TrainTextEncoder { get; init; }
    [Description("Textual inversion: the new word, used in the captions or instance_prompt")]
    public string? PlaceholderToken { get; init; }
    [Description("Textual inversion: the word whose embedding the new one starts from")]
    public string? InitializerToken { get; init; }
    [Description("Textual inversion: vectors per token")]
    public int NumVectors { get; init; } = 1;
    [Description("Hypernetwork: the layer widths as multiples of the input, starting and ending with 1")]
    public string HypernetworkLayerStructure { get; init; } = "1,2,1";
    [Description("Hypernetwork: the activation between layers (linear, relu, swish...)")]
    public string HypernetworkActivation { get; init; } = "linear";
    [Description("Full fine-tune: keep an exponential moving average of the weights and export it")]
    public bool UseEma { get; init; } = true;
    [Description("Full fine-tune: the EMA's decay")]
    public double EmaDecay { get; init; } = 0.9999;
    [Description("Full fine-tune with use_ema: also write the live (last step's, not averaged) weights as NAME-live.safetensors beside the EMA file NAME.safetensors")]
    public bool SaveLiveWeights { get; init; }

    // ---- saving and watching ----
    [Description("Save a checkpoint every N steps (one is always saved at the end)")]
    public int? SaveEveryNSteps { get; init; }
    [Description("Save a checkpoint and the results so far (NAME-000001...) every N epochs")]
    public int? SaveEveryNEpochs { get; init; }
    [Description("Keep only the last K checkpoints")]
    public int SaveLastK { get; init; } = 3;
    [Description("Draw sample images every N steps into samples/")]
    public int? SampleEveryNSteps { get; init; }
    [Description("Draw sample images every N epochs into samples/")]
    public int? SampleEveryNEpochs { get; init; }
    [Description("Draw the sample images before the first step too: a baseline at step 0")]
    public bool SampleAtStart { get; init; }
    [Description("The sample prompts, separated by | (default: the instance prompt or the first caption); each may carry the options of a line of sample_prompts_file")]
    public IReadOnlyList<string> SamplePrompts { get; init; } = [];
    [Description("kohya's sample prompt file instead of sample_prompts: a .txt with a prompt per line and kohya's options after it (n negative prompt, w and h size, d seed, l CFG, s steps, ss sampler, each written with two dashes before it), or kohya's .toml or .json")]
    public string? SamplePromptsFile { get; init; }
    [Description("Seed of the first sample prompt (the next ones count up)")]
    public long SampleSeed { get; init; } = 1234;
    [Description("Sampler steps of the samples (and of generated class images)")]
    public int SampleSteps { get; init; } = 20;
    [Description("Sampler of the samples (and of generated class images)")]
    public string SampleSampler { get; init; } = "Euler a";
    [Description("Write the results in float16")]
    public bool SaveFp16 { get; init; }
    [Description("DreamBooth and fine-tune: also write a diffusers folder")]
    public bool SaveDiffusers { get; init; }

    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        Converters = { new Runs.FiniteOrNullConverter() },
    };

    public static readonly SettingChoices<TrainingMethodKind> MethodChoices = new("method", StringComparison.Ordinal,
        ("lora", TrainingMethodKind.Lora), ("dreambooth", TrainingMethodKind.DreamBooth), ("textual-inversion", TrainingMethodKind.TextualInversion),
        ("finetune", TrainingMethodKind.Finetune), ("hypernetwork", TrainingMethodKind.Hypernetwork));

    public static readonly SettingChoices<AutocastPrecision> PrecisionChoices = new("mixed_precision", StringComparison.Ordinal,
        ("no", AutocastPrecision.None), ("fp16", AutocastPrecision.Float16), ("bf16", AutocastPrecision.BFloat16));

    // kohya spells optimizers in any case (AdamW, adamw).
    public static readonly SettingChoices<OptimizerKind> OptimizerChoices = new("optimizer", StringComparison.OrdinalIgnoreCase,
        ("AdamW", OptimizerKind.AdamW), ("Adam", OptimizerKind.Adam), ("SGD", OptimizerKind.Sgd), ("Lion", OptimizerKind.Lion), ("Adafactor", OptimizerKind.Adafactor),
        ("Prodigy", OptimizerKind.Prodigy), ("AdamW8bit", OptimizerKind.AdamW8bit), ("Lion8bit", OptimizerKind.Lion8bit));

    public static readonly SettingChoices<LossKind> LossTypeChoices = new("loss_type", StringComparison.Ordinal,
        ("l2", LossKind.L2), ("l1", LossKind.L1), ("huber", LossKind.Huber), ("smooth_l1", LossKind.SmoothL1));

    public static readonly SettingChoices<HuberScheduleKind> HuberScheduleChoices = new("huber_schedule", StringComparison.Ordinal,
        ("snr", HuberScheduleKind.Snr), ("exponential", HuberScheduleKind.Exponential), ("constant", HuberScheduleKind.Constant));

    public static readonly SettingChoices<LoraAlgorithm> NetworkAlgoChoices = new("network_algo", StringComparison.Ordinal,
        ("lora", LoraAlgorithm.Lora), ("loha", LoraAlgorithm.Loha), ("lokr", LoraAlgorithm.Lokr));

    public static IReadOnlyList<string> Methods => MethodChoices.Names;

    public static IReadOnlyList<string> Optimizers => OptimizerChoices.Names;

    /// <summary>The optimizer the run steps with: <see cref="Optimizer"/>, AdamW8bit where <see cref="Use8BitAdam"/> asks for it.</summary>
    public OptimizerKind ResolveOptimizer()
    {
        var kind = OptimizerChoices.Parse(Optimizer);
        return Use8BitAdam && kind == OptimizerKind.AdamW ? OptimizerKind.AdamW8bit : kind;
    }

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

    /// <summary>
    /// Settings as a config file or a job request spells them (field names, comments and trailing commas allowed), one
    /// JSON object; <paramref name="source"/> (a file, "request") is named in the message when it is not one.
    /// </summary>
    public static System.Text.Json.Nodes.JsonObject ParseSettings(string json, string source)
    {
        try
        {
            return System.Text.Json.Nodes.JsonNode.Parse(json, documentOptions: new JsonDocumentOptions
            {
                CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true,
            }) as System.Text.Json.Nodes.JsonObject ?? throw new TrainingConfigException($"'{source}' must hold one JSON object of settings");
        }
        catch (JsonException e)
        {
            throw new TrainingConfigException($"'{source}' is not valid JSON: {e.Message}");
        }
    }

    /// <summary>
    /// The run's settings from <paramref name="settings"/> (those of <see cref="ParseSettings"/>) and
    /// <paramref name="flags"/> (field name → text): the preset (the flags' or the settings' <c>preset</c>) first, then the
    /// fields the settings spell out, then the flags. A field that is not a setting, or a value of the wrong type, is
    /// refused naming it and <paramref name="source"/>.
    /// </summary>
    public static TrainingConfig FromSettings(System.Text.Json.Nodes.JsonObject settings, string source, IReadOnlyDictionary<string, string>? flags = null)
    {
        flags ??= new Dictionary<string, string>();
        var names = Fields.Select(FieldName).ToHashSet(StringComparer.Ordinal);
        foreach (var (key, _) in settings)
            if (!names.Contains(key))
                throw new TrainingConfigException($"{key}: not a setting (in '{source}'); valid ones: {string.Join(", ", names)}");
        try
        {
            settings.Deserialize<TrainingConfig>(Json);  // a value of the wrong type: the message names the field's path
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            throw new TrainingConfigException($"'{source}' is not a valid training config: {e.Message}");
        }

        var preset = flags.TryGetValue("preset", out var name) ? name : settings["preset"]?.GetValue<string>();
        var config = new TrainingConfig();
        if (preset is not null) config = config.With(TrainingPresets.Get(preset));
        // Only the fields the settings spell out override the preset, so they are laid over it as JSON.
        var merged = JsonSerializer.SerializeToNode(config, Json)!.AsObject();
        foreach (var (key, value) in settings) merged[key] = value?.DeepClone();
        return merged.Deserialize<TrainingConfig>(Json)!.With(flags);
    }

    /// <summary>Every rank of the run: num_processes on each of num_machines.</summary>
    public int WorldSize() => NumProcesses * NumMachines;

    /// <summary>The device indices of <see cref="Devices"/>; empty when one is not a non-negative integer.</summary>
    public static IReadOnlyList<int> ParseDevices(string devices)
    {
        var indices = new List<int>();
        foreach (var part in devices.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            if (!int.TryParse(part, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var index)) return [];
            indices.Add(index);
        }
        return indices;
    }

    /// <summary>The run.json field name of a property (network_dim; <see cref="DeviceName"/> is <c>device</c>), which front ends turn into their own words.</summary>
    public static string FieldName(PropertyInfo property) =>
        property.GetCustomAttribute<JsonPropertyNameAttribute>()?.Name ?? JsonNamingPolicy.SnakeCaseLower.ConvertName(property.Name);

    /// <summary>The one-line description of a field, for every front end's help (its <see cref="DescriptionAttribute"/>).</summary>
    public static string Description(PropertyInfo property) =>
        property.GetCustomAttribute<DescriptionAttribute>()?.Description ?? throw new InvalidOperationException($"{FieldName(property)} has no description");

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

    /// <summary>
    /// The learning rate the run trains with: <see cref="LearningRate"/>, times the images per optimizer step when
    /// <see cref="ScaleLr"/> (the diffusers scripts' --scale_lr, whose process count is 1 on one GPU).
    /// </summary>
    public double ScaledLearningRate() => ScaleLr ? LearningRate * TrainBatchSize * GradientAccumulationSteps : LearningRate;

    /// <summary>The text encoder's: <see cref="TextEncoderLr"/> as given (the diffusers scripts do not scale it), else the scaled learning rate.</summary>
    public double ScaledTextEncoderLr() => TextEncoderLr ?? ScaledLearningRate();

    /// <summary>
    /// The optimizer steps of the run over a dataset of <paramref name="batchesPerEpoch"/> batches: max_train_epochs'
    /// batches over gradient_accumulation_steps when given (rounded up, as the accumulation runs on across epochs and the
    /// last step completes), else max_train_steps.
    /// </summary>
    public int TotalSteps(int batchesPerEpoch)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchesPerEpoch);
        if (MaxTrainEpochs is not { } epochs) return MaxTrainSteps;
        var batches = (long)epochs * batchesPerEpoch;
        return (int)Math.Min(int.MaxValue, (batches + GradientAccumulationSteps - 1) / GradientAccumulationSteps);
    }

    /// <summary>How long the run trains, in the unit it was given: "10 epochs" or "1000 steps".</summary>
    public string DescribeLength() => MaxTrainEpochs is { } epochs
        ? $"{epochs} epoch{(epochs == 1 ? "" : "s")}"
        : $"{MaxTrainSteps} step{(MaxTrainSteps == 1 ? "" : "s")}";

    /// <summary>
    /// The epochs the run goes through: one optimizer step every gradient_accumulation_steps batches, epoch after epoch,
    /// so ⌈steps × accumulation / batches per epoch⌉, the last possibly cut short.
    /// </summary>
    public int Epochs(int batchesPerEpoch)
    {
        var batches = (long)TotalSteps(batchesPerEpoch) * GradientAccumulationSteps;
        return (int)((batches + batchesPerEpoch - 1) / batchesPerEpoch);
    }

    /// <summary>Whether the run keeps each image's latents (<see cref="CacheLatents"/>, by default when every draw of an image is the same crop).</summary>
    public bool CachesLatents() => CacheLatents ?? CenterCrop;

    private static string Fmt(double value) => value.ToString(CultureInfo.InvariantCulture);

    /// <summary>Whether the loss is weighted per pixel (<see cref="MaskedLoss"/>, or <see cref="AlphaMask"/> alone as in kohya).</summary>
    public bool MasksLoss() => MaskedLoss || AlphaMask;

    /// <summary>Checks every setting before any work starts; the message names the field and the fix.</summary>
    public void Validate()
    {
        void Require(bool ok, string message)
        {
            if (!ok) throw new TrainingConfigException(message);
        }
        var method = MethodChoices.Parse(Method);
        Require(!string.IsNullOrWhiteSpace(Output), "output: give the run folder");
        Require(Data is not null || Concepts is not null || DatasetConfig is not null, "data: give the image folder, a concepts list (concepts) or kohya's dataset config (dataset_config)");
        // kohya ignores train_data_dir and reg_data_dir beside --dataset_config; refusing says so before any work.
        Require(DatasetConfig is null || (Data is null && Concepts is null && ClassData is null),
            "dataset_config: the dataset config names the image folders; leave data, concepts and class_data out (regularization images are its is_reg subsets)");
        Require(Resolution >= 64 && Resolution % 8 == 0, $"resolution: {Resolution} must be a multiple of 8 and at least 64");
        Require(TrainBatchSize >= 1, $"train_batch_size: {TrainBatchSize} must be at least 1");
        Require(GradientAccumulationSteps >= 1, $"gradient_accumulation_steps: {GradientAccumulationSteps} must be at least 1");
        Require(NumProcesses >= 1, $"num_processes: {NumProcesses} must be at least 1");
        Require(NumMachines >= 1, $"num_machines: {NumMachines} must be at least 1");
        Require(MainProcessPort is >= 1 and <= 65535, $"main_process_port: {MainProcessPort} must be a TCP port (1-65535)");
        Require(!string.IsNullOrWhiteSpace(MainProcessIp), "main_process_ip: give the main machine's address");
        Require(DdpTimeout > 0 && double.IsFinite(DdpTimeout), $"ddp_timeout: {DdpTimeout} must be a positive number of minutes");
        Require(DdpBucketCapMb > 0 && double.IsFinite(DdpBucketCapMb), $"ddp_bucket_cap_mb: {DdpBucketCapMb} must be a positive number of MiB");
        Require(DdpBackend is null or "gloo" or "nccl", $"ddp_backend: '{DdpBackend}' is not a backend; use gloo or nccl");
        Require(Devices is null || ParseDevices(Devices) is { Count: > 0 } devices && devices.Count >= NumProcesses,
            $"devices: '{Devices}' must list at least num_processes ({NumProcesses}) comma-separated CUDA device indices");
        Require(MaxTrainSteps >= 1, $"max_train_steps: {MaxTrainSteps} must be at least 1");
        Require(MaxTrainEpochs is null or >= 1, $"max_train_epochs: {MaxTrainEpochs} must be at least 1");
        Require(SaveEveryNEpochs is null or >= 1, $"save_every_n_epochs: {SaveEveryNEpochs} must be at least 1");
        Require(SampleEveryNEpochs is null or >= 1, $"sample_every_n_epochs: {SampleEveryNEpochs} must be at least 1");
        Require(LearningRate > 0, $"learning_rate: {LearningRate} must be positive");
        Require(MaxGradNorm >= 0, $"max_grad_norm: {MaxGradNorm} must be zero (off) or positive");
        var optimizer = OptimizerChoices.Parse(Optimizer);
        Require(!Use8BitAdam || optimizer is OptimizerKind.AdamW or OptimizerKind.AdamW8bit,
            $"use_8bit_adam: it turns AdamW into AdamW8bit, and the optimizer is {Optimizer}; leave use_8bit_adam out, or set optimizer to AdamW8bit");
        Require(DCoef > 0, $"d_coef: {DCoef} must be positive (1 is Prodigy's own estimate)");
        // Prodigy estimates one step size for everything it trains; a group may only be frozen (0) besides.
        Require(optimizer != OptimizerKind.Prodigy || TextEncoderLr is null || TextEncoderLr == 0 || TextEncoderLr == ScaledLearningRate(),
            $"text_encoder_lr: Prodigy takes one learning rate for every part it trains (a multiplier of its own estimate, 1 as a rule); "
            + $"leave text_encoder_lr out, set it to learning_rate ({ScaledLearningRate().ToString(CultureInfo.InvariantCulture)}) or to 0 to freeze the text encoder");
        Require(Torch.Optim.LrSchedule.Names.Contains(LrScheduler), $"lr_scheduler: '{LrScheduler}' is not one of {string.Join(", ", Torch.Optim.LrSchedule.Names)}");
        PrecisionChoices.Parse(MixedPrecision);
        Require(ClipSkip >= 1, $"clip_skip: {ClipSkip} counts from 1 (the last layer)");
        Require(PriorLossWeight >= 0, $"prior_loss_weight: {PriorLossWeight} must not be negative");
        Require(ClassPrompt is null || ClassData is not null || Concepts is not null,
            "class_data: a class prompt (prior preservation) needs a folder for the class images; missing ones are generated there");
        Require(NumClassImages >= 0, $"num_class_images: {NumClassImages} must not be negative");
        Require(CaptionDropoutRate is >= 0 and <= 1, $"caption_dropout_rate: {CaptionDropoutRate} must be in [0, 1]");
        Require(SaveEveryNSteps is null or >= 1, $"save_every_n_steps: {SaveEveryNSteps} must be at least 1");
        Require(SampleEveryNSteps is null or >= 1, $"sample_every_n_steps: {SampleEveryNSteps} must be at least 1");
        Require(SamplePromptsFile is null || SamplePrompts.Count == 0,
            "sample_prompts_file: give the sample prompts in the file or in sample_prompts, not both");
        Require(SaveLastK >= 1, $"save_last_k: {SaveLastK} must be at least 1");
        // kohya refuses cache_latents with random_crop: every draw is another window, so a cache would only grow.
        Require(CenterCrop || CacheLatents != true,
            "cache_latents: a random crop (center_crop false) draws a new window each time, which cannot be cached; set cache_latents false or center_crop true");
        Require(CenterCrop || !CacheLatentsToDisk,
            "cache_latents_to_disk: a random crop (center_crop false) draws a new window each time, which cannot be cached; leave cache_latents_to_disk off or set center_crop true");
        Require(CacheLatents != false || !CacheLatentsToDisk, "cache_latents_to_disk: keeping latents on disk caches them; set cache_latents true or leave it out");
        Require(NoiseOffset >= 0, $"noise_offset: {Fmt(NoiseOffset)} must not be negative (0: off)");
        Require(MultiresNoiseIterations is null or >= 1, $"multires_noise_iterations: {MultiresNoiseIterations} must be at least 1 (leave it out for none)");
        Require(MultiresNoiseDiscount is > 0 and <= 1, $"multires_noise_discount: {Fmt(MultiresNoiseDiscount)} must be in (0, 1] (kohya's default is 0.3)");
        Require(IpNoiseGamma >= 0, $"ip_noise_gamma: {Fmt(IpNoiseGamma)} must not be negative (0: off; 0.1 is usual)");
        LossTypeChoices.Parse(LossType);
        HuberScheduleChoices.Parse(HuberSchedule);
        Require(HuberC > 0 && double.IsFinite(HuberC), $"huber_c: {Fmt(HuberC)} must be positive (kohya's default is 0.1)");
        Require(HuberScale > 0 && double.IsFinite(HuberScale), $"huber_scale: {Fmt(HuberScale)} must be positive (1 leaves the threshold as huber_c gives it)");
        Require(!MaskedLoss || ConditioningDataDir is not null || AlphaMask,
            "masked_loss: give the folder of masks (conditioning_data_dir), or set alpha_mask to use the images' alpha channel");
        Require(ConditioningDataDir is null || MaskedLoss,
            "conditioning_data_dir: the masks are used only with masked_loss; set masked_loss true or leave conditioning_data_dir out");
        Require(ConditioningDataDir is null || !AlphaMask,
            "alpha_mask: the mask comes from conditioning_data_dir or from the alpha channel, not both; leave one out");
        Require(!SaveLiveWeights || (method == TrainingMethodKind.Finetune && UseEma),
            "save_live_weights: only a full fine-tune with use_ema has two sets of weights (the EMA file is the result, the live one is extra); set method finetune and use_ema true, or leave save_live_weights off");
        Require(Vae is null || File.Exists(Vae) || Directory.Exists(Vae),
            $"vae: '{Vae}' does not exist; give a VAE file (.safetensors, .pt, .ckpt) or a diffusers VAE folder (config.json + diffusion_pytorch_model.safetensors)");
        switch (method)
        {
            case TrainingMethodKind.Lora:
                Require(NetworkDim >= 1, $"network_dim: {NetworkDim} must be at least 1 (the LoRA rank)");
                Require(NetworkAlpha >= 0, $"network_alpha: {NetworkAlpha} must not be negative");
                Require(ConvDim is null or >= 1, $"conv_dim: {ConvDim} must be at least 1");
                ValidateNetwork(optimizer);
                break;
            case TrainingMethodKind.TextualInversion:
                Require(!string.IsNullOrWhiteSpace(PlaceholderToken), "placeholder_token: textual inversion needs the new word (for example zwx)");
                Require(!string.IsNullOrWhiteSpace(InitializerToken), "initializer_token: textual inversion needs a word to start from (for example shape)");
                Require(NumVectors >= 1, $"num_vectors: {NumVectors} must be at least 1");
                break;
            case TrainingMethodKind.Hypernetwork:
                var layers = HypernetworkLayerStructure.Split(',');
                Require(layers.Length >= 2 && layers.All(l => double.TryParse(l, CultureInfo.InvariantCulture, out var v) && v > 0)
                    && layers[0].Trim() == "1" && layers[^1].Trim() == "1",
                    $"hypernetwork_layer_structure: '{HypernetworkLayerStructure}' must be positive numbers starting and ending with 1, e.g. 1,2,1");
                break;
        }
    }

    // The LyCORIS, DoRA, LoRA+ and block-wise settings of a LoRA run: what can be checked before the model is known
    // (the block lists' lengths depend on it: 25 blocks for SD 1.x/2.x, 23 for SDXL).
    private void ValidateNetwork(OptimizerKind optimizer)
    {
        void Require(bool ok, string message)
        {
            if (!ok) throw new TrainingConfigException(message);
        }
        var algorithm = NetworkAlgoChoices.Parse(NetworkAlgo);
        Require(LokrFactor == -1 || LokrFactor >= 1, $"lokr_factor: {LokrFactor} must be -1 (the split nearest the square root) or a positive number");
        Require(algorithm == LoraAlgorithm.Lokr || LokrFactor == -1, "lokr_factor: it shapes LoKr's factors; set network_algo lokr or leave it out");
        Require(algorithm == LoraAlgorithm.Lokr || !LokrDecomposeBoth, "lokr_decompose_both: it shapes LoKr's factors; set network_algo lokr or leave it out");
        Require(algorithm != LoraAlgorithm.Lora || !UseTucker, "use_tucker: Tucker factors are LoHa's and LoKr's here; set network_algo loha or lokr, or leave it out");
        Require(NetworkDropout == 0 || (algorithm == LoraAlgorithm.Lora && !DoraWd),
            $"network_dropout: it drops LoRA's rank activations; {(DoraWd ? "DoRA" : algorithm == LoraAlgorithm.Loha ? "LoHa" : "LoKr")} builds the whole weight delta, which has none (LyCORIS ignores it too); leave it 0");
        foreach (var (field, ratio) in new[] { ("loraplus_lr_ratio", LoraplusLrRatio), ("loraplus_unet_lr_ratio", LoraplusUnetLrRatio), ("loraplus_text_encoder_lr_ratio", LoraplusTextEncoderLrRatio) })
        {
            if (ratio is null) continue;
            Require(double.IsFinite(ratio.Value) && ratio > 0, $"{field}: {ratio.Value.ToString(CultureInfo.InvariantCulture)} must be a positive number (16 is the paper's)");
            Require(algorithm == LoraAlgorithm.Lora, $"{field}: LoRA+ speeds up LoRA's lora_up matrices, which {NetworkAlgo} does not have; leave it out or set network_algo lora");
            // Prodigy estimates one step size for everything, so a group at another rate is not Prodigy's to take (kohya refuses the pair too).
            Require(optimizer != OptimizerKind.Prodigy, $"{field}: Prodigy takes one learning rate for every part it trains; LoRA+ needs a faster group, so use AdamW (or leave {field} out)");
        }
        var blockLr = DownLrWeight is not null || MidLrWeight is not null || UpLrWeight is not null;
        Require(!blockLr || optimizer != OptimizerKind.Prodigy,
            "down_lr_weight: Prodigy takes one learning rate for every part it trains; block-wise learning rates need AdamW or another optimizer (or leave the lr weights out)");
        Require(double.IsFinite(BlockLrZeroThreshold) && BlockLrZeroThreshold >= 0, $"block_lr_zero_threshold: {BlockLrZeroThreshold} must be a number ≥ 0");
        // Syntax and values now; the count once the model says which UNet it is.
        Networks.LoraBlocks.LrWeights(isSdxl: false, DownLrWeight, MidLrWeight, UpLrWeight, BlockLrZeroThreshold);
        foreach (var (field, text, whole) in new[] { ("block_dims", BlockDims, true), ("block_alphas", BlockAlphas, false), ("conv_block_dims", ConvBlockDims, true), ("conv_block_alphas", ConvBlockAlphas, false) })
        {
            if (text is null) continue;
            var values = Networks.LoraBlocks.Numbers(text, field);
            Require(values.Length == Networks.LoraBlocks.Count(false) || values.Length == Networks.LoraBlocks.Count(true),
                $"{field}: {values.Length} values given; give one per UNet block: 25 for SD 1.x/2.x (IN00-IN11, MID, OUT00-OUT11), 23 for SDXL");
            Require(!whole || values.All(v => v == Math.Floor(v)), $"{field}: ranks are whole numbers, got {text}");
        }
        Require(BlockAlphas is null || BlockDims is not null || blockLr, "block_alphas: give block_dims (or block-wise learning rates) with it; alone it has no blocks to go with");
        Require(ConvBlockAlphas is null || ConvBlockDims is not null, "conv_block_alphas: give conv_block_dims with it");
        // kohya reads the conv lists only in block mode, which block_dims or a block-wise learning rate turns on.
        Require(ConvBlockDims is null || BlockDims is not null || blockLr,
            "conv_block_dims: it applies with block_dims or block-wise learning rates (down_lr_weight, mid_lr_weight, up_lr_weight); give one of them, or use conv_dim for every block");
    }

}

/// <summary>
/// A run setting cannot be used. The message reads "field: problem" (<c>network_dim: must be at least 1</c>); that leading
/// field is the <see cref="UserInputException.Subject"/>, so the API names it as it names a generation field.
/// </summary>
public sealed partial class TrainingConfigException(string message)
    : UserInputException(message, FieldOf(message)?.Value, FieldOf(message) is { } field ? message[(field.Length + 2)..] : message, null, null)
{
    private static Group? FieldOf(string message) => LeadingField().Match(message) is { Success: true } m ? m.Groups[1] : null;

    [GeneratedRegex(@"^([a-z][a-z0-9_]*(?:\.[a-z0-9_]+|\[\d+\])*): ")]
    private static partial Regex LeadingField();
}
