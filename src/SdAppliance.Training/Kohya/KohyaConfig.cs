using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Tomlyn;
using Tomlyn.Model;

namespace SdAppliance.Training.Kohya;

/// <summary>
/// A kohya training config read into run settings: sd-scripts' <c>--config_file</c> TOML (flat, or in sections, which
/// kohya's <c>read_config_from_file</c> flattens) or a config the kohya_ss GUI saved (JSON: its own names for a few
/// keys, <c>epoch</c>, <c>max_resolution</c>, <c>optimizer</c>, <c>LoRA_type</c>, and numbers often as text). Every key
/// falls in one of four groups: mapped onto a run setting (<see cref="Settings"/>); without effect here, such as
/// performance, logging and the GUI's own keys, or unset (<see cref="NoEffect"/>); not applied, as its value changes nothing
/// this trainer trains or it is unknown here (<see cref="NotApplied"/>, listed by name and value); or refused, as it
/// would train something else than kohya would (an IA3 or DyLoRA network, a timestep range, a DAdaptation optimizer), all of
/// them in one <see cref="TrainingConfigException"/> of <c>kohya_config</c>.
/// </summary>
public sealed class KohyaConfig
{
    private const string Field = "kohya_config";

    /// <summary>Keys with the same meaning as a run setting (kohya name → run.json field), converted to the field's type.</summary>
    private static readonly IReadOnlyDictionary<string, string> Direct = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["pretrained_model_name_or_path"] = "model",
        ["train_data_dir"] = "data",
        ["reg_data_dir"] = "class_data",
        ["output_dir"] = "output",
        ["output_name"] = "output_name",
        ["dataset_config"] = "dataset_config",
        ["max_train_epochs"] = "max_train_epochs",
        ["max_train_steps"] = "max_train_steps",
        ["learning_rate"] = "learning_rate",
        ["network_dim"] = "network_dim",
        ["network_alpha"] = "network_alpha",
        ["network_dropout"] = "network_dropout",
        ["lr_scheduler"] = "lr_scheduler",
        ["lr_warmup_steps"] = "lr_warmup_steps",
        ["lr_scheduler_num_cycles"] = "lr_num_cycles",
        ["lr_scheduler_power"] = "lr_power",
        ["mixed_precision"] = "mixed_precision",
        ["train_batch_size"] = "train_batch_size",
        ["gradient_accumulation_steps"] = "gradient_accumulation_steps",
        ["seed"] = "seed",
        ["save_every_n_epochs"] = "save_every_n_epochs",
        ["save_every_n_steps"] = "save_every_n_steps",
        ["caption_extension"] = "caption_extension",
        ["clip_skip"] = "clip_skip",
        ["noise_offset"] = "noise_offset",
        ["min_snr_gamma"] = "min_snr_gamma",
        ["prior_loss_weight"] = "prior_loss_weight",
        ["enable_bucket"] = "enable_bucket",
        ["min_bucket_reso"] = "min_bucket_reso",
        ["max_bucket_reso"] = "max_bucket_reso",
        ["flip_aug"] = "flip_aug",
        ["shuffle_caption"] = "shuffle_caption",
        ["keep_tokens"] = "keep_tokens",
        ["caption_dropout_rate"] = "caption_dropout_rate",
        ["cache_latents"] = "cache_latents",
        ["cache_latents_to_disk"] = "cache_latents_to_disk",
        ["gradient_checkpointing"] = "gradient_checkpointing",
        ["max_grad_norm"] = "max_grad_norm",
        ["sample_every_n_steps"] = "sample_every_n_steps",
        ["sample_every_n_epochs"] = "sample_every_n_epochs",
        ["sample_prompts"] = "sample_prompts_file",
        ["sample_sampler"] = "sample_sampler",
        ["token_string"] = "placeholder_token",
        ["init_word"] = "initializer_token",
        ["num_vectors_per_token"] = "num_vectors",
        ["vae"] = "vae",
        ["use_8bit_adam"] = "use_8bit_adam",
        ["loss_type"] = "loss_type",
        ["huber_schedule"] = "huber_schedule",
        ["huber_c"] = "huber_c",
        ["huber_scale"] = "huber_scale",
        ["ip_noise_gamma"] = "ip_noise_gamma",
        ["multires_noise_iterations"] = "multires_noise_iterations",
        ["multires_noise_discount"] = "multires_noise_discount",
        ["zero_terminal_snr"] = "zero_terminal_snr",
        ["scale_v_pred_loss_like_noise_pred"] = "scale_v_pred_loss_like_noise_pred",
        ["masked_loss"] = "masked_loss",
        ["alpha_mask"] = "alpha_mask",
        ["conditioning_data_dir"] = "conditioning_data_dir",
        // The kohya_ss GUI keeps network_args' block and LoRA+ options (and LyCORIS's) as keys of their own.
        ["down_lr_weight"] = "down_lr_weight",
        ["mid_lr_weight"] = "mid_lr_weight",
        ["up_lr_weight"] = "up_lr_weight",
        ["block_lr_zero_threshold"] = "block_lr_zero_threshold",
        ["block_dims"] = "block_dims",
        ["block_alphas"] = "block_alphas",
        ["conv_block_dims"] = "conv_block_dims",
        ["conv_block_alphas"] = "conv_block_alphas",
        ["loraplus_lr_ratio"] = "loraplus_lr_ratio",
        ["loraplus_unet_lr_ratio"] = "loraplus_unet_lr_ratio",
        ["loraplus_text_encoder_lr_ratio"] = "loraplus_text_encoder_lr_ratio",
        ["dora_wd"] = "dora_wd",
        ["use_tucker"] = "use_tucker",
        ["use_cp"] = "use_tucker",
        ["decompose_both"] = "lokr_decompose_both",
        // accelerate's launch settings, which the kohya_ss GUI keeps beside the others (ddp_timeout in minutes, as here).
        ["num_processes"] = "num_processes",
        ["num_machines"] = "num_machines",
        ["main_process_port"] = "main_process_port",
        ["gpu_ids"] = "devices",
        ["ddp_timeout"] = "ddp_timeout",
    };

    /// <summary>Keys where kohya's 0 means "off", which the run setting spells by leaving it out.</summary>
    private static readonly IReadOnlySet<string> ZeroIsOff = new HashSet<string>(StringComparer.Ordinal)
    {
        "max_train_epochs", "epoch", "max_train_steps", "min_snr_gamma", "save_every_n_epochs", "save_every_n_steps", "sample_every_n_steps",
        "sample_every_n_epochs", "multires_noise_iterations", "loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio",
        "block_lr_zero_threshold", "main_process_port",
    };

    /// <summary>Keys handled one by one below (their meaning depends on other keys).</summary>
    private static readonly IReadOnlySet<string> Special = new HashSet<string>(StringComparer.Ordinal)
    {
        "resolution", "max_resolution", "random_crop", "unet_lr", "text_encoder_lr", "network_train_unet_only", "network_train_text_encoder_only",
        "network_module", "network_args", "LoRA_type", "conv_dim", "conv_alpha", "optimizer_type", "optimizer", "optimizer_args", "lr_warmup",
        "save_precision", "epoch", "sample_prompts", "factor",
    };

    /// <summary>Keys that change only speed, memory, logging or the GUI here, or that the model itself says (v2, sdxl): noted, never applied.</summary>
    private static readonly IReadOnlyDictionary<string, string> WithoutEffect = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["xformers"] = "attention kernel", ["sdpa"] = "attention kernel", ["mem_eff_attn"] = "attention kernel",
        ["max_data_loader_n_workers"] = "data loading", ["persistent_data_loader_workers"] = "data loading", ["num_cpu_threads_per_process"] = "threads",
        ["logging_dir"] = "logging", ["log_with"] = "logging", ["log_prefix"] = "logging", ["log_tracker_name"] = "logging", ["use_wandb"] = "logging",
        ["wandb_api_key"] = "logging", ["wandb_run_name"] = "logging", ["training_comment"] = "a comment",
        ["save_model_as"] = "results are safetensors (and A1111 .pt where that is the format)",
        ["full_fp16"] = "precision is mixed_precision's", ["full_bf16"] = "precision is mixed_precision's",
        ["lowram"] = "memory", ["lowvram"] = "memory", ["highvram"] = "memory", ["vae_batch_size"] = "memory",
        ["sdxl_no_half_vae"] = "the VAE runs in float32", ["no_half_vae"] = "the VAE runs in float32",
        ["cache_text_encoder_outputs"] = "text embeddings are cached when they cannot change", ["sdxl_cache_text_encoder_outputs"] = "text embeddings are cached when they cannot change",
        ["v2"] = "the model's own config tells its family", ["sdxl"] = "the model's own config tells its family",
        ["v_parameterization"] = "the model's scheduler config tells its prediction type",
        ["save_state"] = "training states are always saved", ["save_state_on_train_end"] = "training states are always saved",
        ["save_last_n_steps"] = "save_last_k keeps the checkpoints", ["save_last_n_steps_state"] = "save_last_k keeps the checkpoints",
        ["save_last_n_epochs"] = "save_last_k keeps the checkpoints", ["save_last_n_epochs_state"] = "save_last_k keeps the checkpoints",
        ["max_token_length"] = "prompts are read in 75-token chunks, as A1111",
        ["multi_gpu"] = "num_processes says how many ranks", ["ddp_gradient_as_bucket_view"] = "memory", ["ddp_static_graph"] = "the gradient buckets are the trainer's",
        ["dynamo_backend"] = "compilation", ["model_list"] = "the GUI's model picker",
    };

    /// <summary>Keys that would change what trains, with kohya's default: at that value (or unset) they change nothing; at another, they are refused.</summary>
    private static readonly IReadOnlyDictionary<string, (object? Default, string What)> Refused = new Dictionary<string, (object?, string)>(StringComparer.Ordinal)
    {
        ["color_aug"] = (false, "color augmentation is not supported"),
        ["bucket_no_upscale"] = (false, "small images are upscaled to their bucket here"),
        ["bucket_reso_steps"] = (64L, "the bucket step is 64 here"),
        ["face_crop_aug_range"] = (null, "face-crop augmentation is not supported"),
        ["noise_offset_type"] = ("Original", "only the original noise offset is supported"),
        ["adaptive_noise_scale"] = (0L, "adaptive noise scale is not supported"),
        ["min_timestep"] = (0L, "timesteps are drawn from the whole range"),
        ["max_timestep"] = (1000L, "timesteps are drawn from the whole range"),
        ["v_pred_like_loss"] = (0L, "the v-prediction-like loss is not supported"),
        ["debiased_estimation_loss"] = (false, "the debiased estimation loss is not supported"),
        ["weighted_captions"] = (false, "caption weights are read as A1111 prompt syntax, always"),
        ["stop_text_encoder_training"] = (0L, "the text encoder trains for the whole run or not at all"),
        ["network_weights"] = (null, "training on from a LoRA file is not supported (resume a run instead)"),
        ["lora_network_weights"] = (null, "training on from a LoRA file is not supported (resume a run instead)"),
        ["dim_from_weights"] = (false, "training on from a LoRA file is not supported"),
        ["scale_weight_norms"] = (0L, "max-norm regularization is not supported"),
        ["caption_tag_dropout_rate"] = (0L, "only caption_dropout_rate is supported"),
        ["caption_dropout_every_n_epochs"] = (0L, "only caption_dropout_rate is supported"),
        ["noise_offset_random_strength"] = (false, "the noise offset is fixed"),
        ["caption_prefix"] = (null, "caption prefixes are not supported"), ["caption_suffix"] = (null, "caption suffixes are not supported"),
        ["keep_tokens_separator"] = (null, "keep_tokens counts comma-separated tags"), ["enable_wildcard"] = (false, "caption wildcards are not supported"),
        ["token_warmup_min"] = (1L, "token warmup is not supported"), ["token_warmup_step"] = (0L, "token warmup is not supported"),
        ["no_token_padding"] = (false, "prompts are always padded"),
        ["rank_dropout"] = (0L, "rank dropout is not supported"), ["module_dropout"] = (0L, "module dropout is not supported"),
        ["lr_scheduler_args"] = (null, "scheduler arguments are not supported"),
        ["additional_parameters"] = (null, "extra command-line arguments are not read (give them as settings)"),
        ["train_norm"] = (false, "LyCORIS's trained norm layers are not supported"),
        ["use_scalar"] = (false, "LyCORIS's trained scalar is not supported"),
        ["rank_dropout_scale"] = (false, "rank dropout is not supported"),
        ["unit"] = (1L, "DyLoRA is not supported"),
        ["train_on_input"] = (true, "the GUI's IA3 option"),
    };

    private KohyaConfig(JsonObject settings, IReadOnlyList<string> noEffect, IReadOnlyList<string> notApplied, IReadOnlyList<string> notes)
    {
        Settings = settings;
        NoEffect = noEffect;
        NotApplied = notApplied;
        Notes = notes;
    }

    /// <summary>The run settings the file maps to (run.json fields), to lay over a preset and under a config file and flags.</summary>
    public JsonObject Settings { get; }

    /// <summary>Keys without effect here (performance, logging, the GUI's own) or unset, by name.</summary>
    public IReadOnlyList<string> NoEffect { get; }

    /// <summary>Keys set to a value this trainer does not apply, each as "name = value: why".</summary>
    public IReadOnlyList<string> NotApplied { get; }

    /// <summary>How a kohya key was read where its meaning differs from ours ("unet_lr 0.0002 is learning_rate").</summary>
    public IReadOnlyList<string> Notes { get; }

    /// <summary>
    /// sd-scripts' argparse spellings of run settings, where the flag differs from ours: each is also accepted as a flag
    /// (<c>--optimizer_type</c> for <c>--optimizer</c>, <c>--train_data_dir</c> for <c>--data</c>, and every
    /// setting's snake_case name, <c>--network_dim</c>).
    /// </summary>
    public static IReadOnlyDictionary<string, string> FlagAliases { get; } = BuildAliases();

    private static Dictionary<string, string> BuildAliases()
    {
        var aliases = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var field in TrainingConfig.Fields.Select(TrainingConfig.FieldName))
            if (field.Contains('_', StringComparison.Ordinal)) aliases[field] = field;
        foreach (var (kohya, field) in Direct)
            if (kohya != field) aliases[kohya] = field;
        aliases["sample_prompts"] = "sample_prompts_file";  // kohya's --sample_prompts names a file
        aliases["optimizer_type"] = "optimizer";
        // Not unet_lr: kohya's users give it beside --learning_rate, which one flag cannot take twice.
        return aliases;
    }

    /// <summary>
    /// Reads <paramref name="path"/>: a <c>.toml</c> as sd-scripts' config file, a <c>.json</c> as the kohya_ss GUI's. A key
    /// that would change what trains is refused, with every other such key, in one message naming each.
    /// </summary>
    public static KohyaConfig Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new TrainingConfigException($"{Field}: '{path}' does not exist");
        var text = File.ReadAllText(path);
        var keys = Path.GetExtension(path).ToLowerInvariant() switch
        {
            ".toml" => FromToml(text, path),
            ".json" => FromJson(text, path),
            _ => throw new TrainingConfigException($"{Field}: '{path}' is neither a .toml (sd-scripts' --config_file) nor a .json (a kohya_ss GUI config)"),
        };
        return new Reader(path, keys, Path.GetExtension(path).Equals(".json", StringComparison.OrdinalIgnoreCase)).Read();
    }

    /// <summary>sd-scripts' config file: its sections' keys flattened (kohya's read_config_from_file), top-level keys as they are.</summary>
    private static List<KeyValuePair<string, object?>> FromToml(string text, string path)
    {
        TomlTable document;
        try
        {
            document = TomlSerializer.Deserialize<TomlTable>(text, (TomlSerializerOptions?)null)!;
        }
        catch (TomlException e)
        {
            throw new TrainingConfigException($"{Field}: '{path}' is not valid TOML: {e.Message}");
        }
        var keys = new List<KeyValuePair<string, object?>>();
        foreach (var (key, value) in document)
        {
            if (value is TomlTable section)
                foreach (var (inner, innerValue) in section) keys.Add(new(inner, Plain(innerValue)));
            else
                keys.Add(new(key, Plain(value)));
        }
        return keys;
    }

    private static List<KeyValuePair<string, object?>> FromJson(string text, string path)
    {
        JsonElement root;
        try
        {
            root = JsonDocument.Parse(text, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip }).RootElement;
        }
        catch (JsonException e)
        {
            throw new TrainingConfigException($"{Field}: '{path}' is not valid JSON: {e.Message}");
        }
        if (root.ValueKind != JsonValueKind.Object) throw new TrainingConfigException($"{Field}: '{path}' must hold one JSON object, as the kohya_ss GUI saves it");
        return [.. root.EnumerateObject().Select(p => new KeyValuePair<string, object?>(p.Name, Plain(p.Value)))];
    }

    /// <summary>A value as text, a whole number (long), a number (double), a bool, a list or null, whichever format it came from.</summary>
    private static object? Plain(object? value) => value switch
    {
        TomlArray array => array.Select(Plain).ToList(),
        JsonElement e => e.ValueKind switch
        {
            JsonValueKind.String => e.GetString(),
            JsonValueKind.Number => e.TryGetInt64(out var l) ? l : e.GetDouble(),
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            JsonValueKind.Array => e.EnumerateArray().Select(i => Plain(i)).ToList(),
            JsonValueKind.Null => null,
            _ => e.GetRawText(),
        },
        _ => value,
    };

    /// <param name="fromGui">A kohya_ss GUI config, whose sample_prompts holds the prompts themselves rather than a file's name.</param>
    private sealed class Reader(string path, List<KeyValuePair<string, object?>> keys, bool fromGui)
    {
        private readonly JsonObject settings = [];
        private readonly List<string> noEffect = [];
        private readonly List<string> notApplied = [];
        private readonly List<string> notes = [];
        private readonly List<string> refused = [];
        private readonly Dictionary<string, object?> values = new(StringComparer.Ordinal);

        public KohyaConfig Read()
        {
            foreach (var (key, value) in keys) values[key] = value;
            foreach (var (key, value) in values)
            {
                if (Special.Contains(key)) continue;
                if (Direct.TryGetValue(key, out var field))
                {
                    if (IsUnset(value) || (ZeroIsOff.Contains(key) && IsZero(value))) noEffect.Add(key);
                    else Set(field, key, value);
                }
                else if (Refused.TryGetValue(key, out var rule))
                {
                    // kohya reads its bucket options only with enable_bucket.
                    var bucketsOff = key.StartsWith("bucket_", StringComparison.Ordinal) && values.GetValueOrDefault("enable_bucket") is not (true or "true" or "True");
                    if (IsUnset(value) || bucketsOff || (rule.Default is not null && Same(value, rule.Default))) noEffect.Add(key);
                    else refused.Add($"{key} = {Show(value)} ({rule.What})");
                }
                else if (WithoutEffect.ContainsKey(key) || IsUnset(value))
                {
                    noEffect.Add(key);
                }
                else
                {
                    notApplied.Add($"{key} = {Show(value)}: not a setting this trainer knows");
                }
            }
            Resolution();
            Length();
            SamplePrompts();
            Network();
            LearningRates();
            Optimizer();
            Warmup();
            SavePrecision();
            if (values.TryGetValue("random_crop", out var crop) && !IsUnset(crop) && Bool(crop, "random_crop") is { } random)
                settings["center_crop"] = !random;
            if (values.TryGetValue("dataset_config", out var datasetConfig) && !IsUnset(datasetConfig))
                foreach (var folder in new[] { "train_data_dir", "reg_data_dir" })
                    if (settings.Remove(folder == "train_data_dir" ? "data" : "class_data"))
                        notes.Add($"{folder} is left out: kohya reads the images from dataset_config when it is given");
            if (refused.Count > 0)
                throw new TrainingConfigException($"{Field}: '{path}' sets what this trainer would train differently: {string.Join("; ", refused)}; remove these keys or set kohya's defaults");
            return new KohyaConfig(settings, noEffect, notApplied, notes);
        }

        /// <summary>
        /// The GUI's epoch is the run's length unless max_train_epochs or max_train_steps says it (the GUI then passes those);
        /// in sd-scripts, max_train_epochs overrides max_train_steps, as here.
        /// </summary>
        private void Length()
        {
            if (!values.TryGetValue("epoch", out var epoch) || IsUnset(epoch) || IsZero(epoch))
            {
                if (values.ContainsKey("epoch")) noEffect.Add("epoch");
                return;
            }
            if (settings["max_train_epochs"] is not null) notes.Add("epoch is left out: max_train_epochs gives the length");
            else if (settings["max_train_steps"] is not null) notes.Add("epoch is left out: max_train_steps gives the length, as the GUI passes it");
            else Set("max_train_epochs", "epoch", epoch);
        }

        /// <summary>sd-scripts' sample_prompts names a prompt file; the GUI's holds the prompts, a line each (with kohya's options).</summary>
        private void SamplePrompts()
        {
            if (!values.TryGetValue("sample_prompts", out var value) || IsUnset(value)) return;
            if (!fromGui)
            {
                Set("sample_prompts_file", "sample_prompts", value);
                return;
            }
            if (Text(value, "sample_prompts") is not { } text) return;
            var lines = text.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith('#')).ToList();
            settings["sample_prompts"] = new JsonArray([.. lines.Select(l => (JsonNode)l)]);
        }

        private void Resolution()
        {
            foreach (var key in new[] { "resolution", "max_resolution" })
            {
                if (!values.TryGetValue(key, out var value) || IsUnset(value)) continue;
                // "512", "512,768", 512 or [512, 768]: kohya's width, height.
                var sides = value switch
                {
                    string s => s.Split(',').Select(p => Whole(p.Trim(), key)).ToList(),
                    List<object?> list => list.Select(v => Whole(v, key)).ToList(),
                    _ => [Whole(value, key)],
                };
                if (sides.Any(s => s is null)) continue;
                if (sides.Count is < 1 or > 2) refused.Add($"{key} = {Show(value)} (give one side, or width,height)");
                else if (sides.Count == 2 && sides[0] != sides[1])
                    refused.Add($"{key} = {Show(value)} (training sizes are square here: resolution is one side, and enable_bucket trains other aspect ratios at that area)");
                else settings["resolution"] = sides[0]!.Value;
            }
        }

        /// <summary>LyCORIS's algorithms, by network_args' algo and the GUI's LoRA_type, as this trainer names them (network_algo).</summary>
        private static readonly IReadOnlyDictionary<string, string> Algorithms = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase)
        {
            ["lora"] = "lora", ["locon"] = "lora", ["loha"] = "loha", ["lokr"] = "lokr",
        };

        /// <summary>network_args names read as run settings (kohya's LoRA and LyCORIS spell them the same way).</summary>
        private static readonly IReadOnlyDictionary<string, string> NetworkArgs = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["conv_dim"] = "conv_dim", ["conv_alpha"] = "conv_alpha", ["factor"] = "lokr_factor", ["decompose_both"] = "lokr_decompose_both",
            ["use_tucker"] = "use_tucker", ["use_cp"] = "use_tucker", ["dora_wd"] = "dora_wd",
            ["down_lr_weight"] = "down_lr_weight", ["mid_lr_weight"] = "mid_lr_weight", ["up_lr_weight"] = "up_lr_weight",
            ["block_lr_zero_threshold"] = "block_lr_zero_threshold", ["block_dims"] = "block_dims", ["block_alphas"] = "block_alphas",
            ["conv_block_dims"] = "conv_block_dims", ["conv_block_alphas"] = "conv_block_alphas",
            ["loraplus_lr_ratio"] = "loraplus_lr_ratio", ["loraplus_unet_lr_ratio"] = "loraplus_unet_lr_ratio",
            ["loraplus_text_encoder_lr_ratio"] = "loraplus_text_encoder_lr_ratio",
        };

        /// <summary>
        /// The network: kohya's LoRA (networks.lora, LoCon with conv_dim) or LyCORIS (lycoris.kohya with algo lora/locon,
        /// loha or lokr), their network_args, or the GUI's LoRA_type; other networks are refused.
        /// </summary>
        private void Network()
        {
            bool isLora = false;
            bool lycoris = false;
            if (Text("network_module") is { } module)
            {
                if (module is "networks.lora" or "lycoris.kohya") isLora = true;
                else refused.Add($"network_module = {Show(module)} (kohya's networks.lora and LyCORIS's lycoris.kohya with algo lora, locon, loha or lokr are trained here)");
                lycoris = module == "lycoris.kohya";
            }
            bool locon = false;
            if (Text("LoRA_type") is { } type)
            {
                var algo = type switch
                {
                    "Standard" or "Kohya LoCon" or "LyCORIS/LoCon" => "lora",
                    "LyCORIS/LoHa" => "loha",
                    "LyCORIS/LoKr" => "lokr",
                    _ => null,
                };
                if (algo is null) refused.Add($"LoRA_type = {Show(type)} (Standard, Kohya LoCon, LyCORIS/LoCon, LyCORIS/LoHa and LyCORIS/LoKr are trained here)");
                else
                {
                    isLora = true;
                    settings["network_algo"] = algo;
                }
                locon = type is "Kohya LoCon" or "LyCORIS/LoCon" or "LyCORIS/LoHa" or "LyCORIS/LoKr";
                // The GUI's factor is LoKr's (-1: as large a factor as the shape allows).
                if (algo == "lokr" && values.TryGetValue("factor", out var factor) && !IsUnset(factor)) Set("lokr_factor", "factor", factor);
                else if (values.ContainsKey("factor")) noEffect.Add("factor");
            }
            else if (values.ContainsKey("factor")) noEffect.Add("factor");
            if (values.TryGetValue("network_args", out var args) && !IsUnset(args))
            {
                var items = Items(args);
                foreach (var item in items)
                {
                    var (name, value) = Pair(item);
                    if (name == "algo" && lycoris && Algorithms.TryGetValue(value, out var algo)) settings["network_algo"] = algo;
                    else if (name == "algo") refused.Add($"network_args {Show(item)} (LyCORIS's lora, locon, loha and lokr are trained here, with network_module lycoris.kohya)");
                    else if (NetworkArgs.TryGetValue(name, out var field)) Set(field, "network_args " + name, Python(value));
                    else refused.Add($"network_args {Show(item)} (read here: algo, {string.Join(", ", NetworkArgs.Keys)})");
                }
            }
            // The GUI keeps conv_dim and conv_alpha for every type; they are LoCon's only with Kohya LoCon.
            foreach (var key in new[] { "conv_dim", "conv_alpha" })
            {
                if (!values.TryGetValue(key, out var value) || IsUnset(value)) continue;
                if (locon || Text("LoRA_type") is null) Set(key, key, value);
                else noEffect.Add(key);
            }
            if (isLora) settings["method"] = "lora";
            else if (values.ContainsKey("token_string") || values.ContainsKey("init_word")) settings["method"] = "textual-inversion";
            // A DreamBooth or fine-tune config names no network: the script it was for is not in the file.
            else notes.Add("the file names no network (network_module, LoRA_type) nor textual inversion word, so it does not say what it trains: give --method dreambooth or finetune for such a config (the run's method applies otherwise)");
            if (Bool(values.GetValueOrDefault("network_train_text_encoder_only"), "network_train_text_encoder_only") == true)
                refused.Add("network_train_text_encoder_only = true (the UNet's LoRA always trains)");
            else if (values.ContainsKey("network_train_text_encoder_only")) noEffect.Add("network_train_text_encoder_only");
        }

        /// <summary>unet_lr is our learning_rate; kohya's LoRA trains the text encoder too unless network_train_unet_only or a text_encoder_lr of 0.</summary>
        private void LearningRates()
        {
            var unet = values.TryGetValue("unet_lr", out var u) && !IsUnset(u) ? Number(u, "unet_lr") : null;
            if (unet is > 0)
            {
                if (settings["learning_rate"] is { } given && given.GetValue<double>() != unet)
                    notes.Add($"unet_lr {F(unet.Value)} is the learning rate (learning_rate {F(given.GetValue<double>())} is kohya's default for the parts without their own)");
                settings["learning_rate"] = unet.Value;
            }
            else if (values.ContainsKey("unet_lr")) noEffect.Add("unet_lr");
            var textEncoder = values.TryGetValue("text_encoder_lr", out var t) && !IsUnset(t) ? Number(t, "text_encoder_lr") : null;
            var unetOnly = Bool(values.GetValueOrDefault("network_train_unet_only"), "network_train_unet_only") == true || textEncoder == 0;
            if (textEncoder is > 0) settings["text_encoder_lr"] = textEncoder.Value;
            if (settings["method"]?.GetValue<string>() == "lora")
            {
                settings["train_text_encoder"] = !unetOnly;
                if (!unetOnly) notes.Add("train_text_encoder is on: kohya's LoRA trains the text encoder unless network_train_unet_only");
            }
            if (values.ContainsKey("network_train_unet_only") && !settings.ContainsKey("train_text_encoder")) noEffect.Add("network_train_unet_only");
        }

        /// <summary>kohya's optimizer names: a paged variant is the same update with its state paged out of GPU memory under pressure; others this trainer has not are refused.</summary>
        private void Optimizer()
        {
            var name = Text("optimizer_type") ?? Text("optimizer");
            if (name is not null)
            {
                var kind = name.ToLowerInvariant() switch
                {
                    "pagedadamw8bit" => "AdamW8bit",
                    "pagedadamw" or "pagedadamw32bit" => "AdamW",
                    "pagedlion8bit" => "Lion8bit",
                    _ => TrainingConfig.Optimizers.FirstOrDefault(o => string.Equals(o, name, StringComparison.OrdinalIgnoreCase)),
                };
                if (kind is null) refused.Add($"optimizer_type = {Show(name)} (the optimizers here: {string.Join(", ", TrainingConfig.Optimizers)})");
                else
                {
                    if (!string.Equals(kind, name, StringComparison.OrdinalIgnoreCase)) notes.Add($"optimizer {name} is {kind}: the same update, its state not paged");
                    settings["optimizer"] = kind;
                }
            }
            if (!values.TryGetValue("optimizer_args", out var args) || IsUnset(args)) return;
            var items = Items(args);
            foreach (var item in items)
            {
                var (key, value) = Pair(item);
                switch (key)
                {
                    case "weight_decay": Set("adam_weight_decay", "optimizer_args " + key, value); break;
                    case "eps": Set("adam_epsilon", "optimizer_args " + key, value); break;
                    case "d_coef" or "use_bias_correction" or "safeguard_warmup": Set(key, "optimizer_args " + key, Python(value)); break;
                    case "betas":
                        var betas = value.Trim('(', ')', '[', ']').Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
                        if (betas.Length == 2)
                        {
                            Set("adam_beta1", "optimizer_args betas", betas[0]);
                            Set("adam_beta2", "optimizer_args betas", betas[1]);
                        }
                        else refused.Add($"optimizer_args {Show(item)} (betas are two numbers)");
                        break;
                    // Prodigy here decouples its weight decay, as kohya's users ask with decouple=True.
                    case "decouple" when Python(value) == "true": break;
                    default: refused.Add($"optimizer_args {Show(item)} (weight_decay, betas, eps, d_coef, use_bias_correction and safeguard_warmup are read)"); break;
                }
            }
        }

        /// <summary>The GUI's lr_warmup is a percentage of the steps: steps when the file gives max_train_steps, refused when only epochs tell the length.</summary>
        private void Warmup()
        {
            if (!values.TryGetValue("lr_warmup", out var value) || IsUnset(value)) return;
            var percent = Number(value, "lr_warmup");
            if (percent is null or 0)
            {
                noEffect.Add("lr_warmup");
                return;
            }
            if (settings["lr_warmup_steps"] is not null) return;
            if (settings["max_train_steps"] is { } steps && settings["max_train_epochs"] is null)
            {
                var total = steps.GetValue<int>();
                var warmup = (int)Math.Round(percent.Value / 100 * total, MidpointRounding.AwayFromZero);
                settings["lr_warmup_steps"] = warmup;
                notes.Add($"lr_warmup {F(percent.Value)}% of {total} steps is lr_warmup_steps {warmup}");
            }
            else refused.Add($"lr_warmup = {Show(value)} (a percentage of steps the run counts from its epochs: give lr_warmup_steps instead)");
        }

        private void SavePrecision()
        {
            if (Text("save_precision") is not { } precision) return;
            switch (precision)
            {
                case "fp16": settings["save_fp16"] = true; break;
                case "float" or "fp32": settings["save_fp16"] = false; break;
                default: notApplied.Add($"save_precision = {Show(precision)}: results are saved in float32, or float16 with save_fp16"); break;
            }
        }

        /// <summary>Sets a run setting from a kohya value, converted to the field's type; a value that does not convert is refused.</summary>
        private void Set(string field, string key, object? value)
        {
            var property = TrainingConfig.Fields.First(f => TrainingConfig.FieldName(f) == field);
            var type = Nullable.GetUnderlyingType(property.PropertyType) ?? property.PropertyType;
            JsonNode? node;
            if (type == typeof(string)) node = Text(value, key);
            else if (type == typeof(bool)) node = Bool(value, key);
            else if (type == typeof(long)) node = Whole(value, key);
            else if (type == typeof(double)) node = Number(value, key);
            else if (type == typeof(int))
                node = Whole(value, key) is not { } whole ? null : whole is >= int.MinValue and <= int.MaxValue ? (int)whole : BadStruct<int>(key, value, "a whole number in range");
            else throw new InvalidOperationException($"{field} has no kohya conversion");
            if (node is not null) settings[field] = node;
        }

        private string? Text(string key) => values.TryGetValue(key, out var value) && !IsUnset(value) ? Text(value, key) : null;

        private string? Text(object? value, string key) => value switch
        {
            string s => s,
            long or double or bool => Show(value).Trim('"'),
            _ => Bad(key, value, "text"),
        };

        private bool? Bool(object? value, string key) => value switch
        {
            null => null,
            bool b => b,
            string s when bool.TryParse(s, out var b) => b,
            _ => BadStruct<bool>(key, value, "true or false"),
        };

        private long? Whole(object? value, string key) => Number(value, key) is { } n
            ? n == Math.Floor(n) && Math.Abs(n) < 1e15 ? (long)n : BadStruct<long>(key, value, "a whole number")
            : null;

        private double? Number(object? value, string key) => value switch
        {
            long l => l,
            double d => d,
            string s when double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) => d,
            _ => BadStruct<double>(key, value, "a number"),
        };

        private string? Bad(string key, object? value, string expected)
        {
            refused.Add($"{key} = {Show(value)} (must be {expected})");
            return null;
        }

        private T? BadStruct<T>(string key, object? value, string expected) where T : struct
        {
            refused.Add($"{key} = {Show(value)} (must be {expected})");
            return null;
        }

        /// <summary>network_args and optimizer_args: a TOML list of "name=value" items, or the GUI's one text of them, space-separated.</summary>
        private static IEnumerable<string> Items(object? args) =>
            args is List<object?> list ? list.Select(a => a?.ToString() ?? "") : (args?.ToString() ?? "").Split(' ', StringSplitOptions.RemoveEmptyEntries);

        private static (string Key, string Value) Pair(string item)
        {
            var equals = item.IndexOf('=', StringComparison.Ordinal);
            return equals < 0 ? (item.Trim(), "") : (item[..equals].Trim(), item[(equals + 1)..].Trim());
        }

        /// <summary>Python's True/False as our true/false; anything else as it is.</summary>
        private static string Python(string value) => value switch { "True" => "true", "False" => "false", _ => value };

        private static bool IsUnset(object? value) => value is null || (value is string s && s.Trim().Length == 0) || value is List<object?> { Count: 0 };

        private static bool IsZero(object? value) => value switch
        {
            long l => l == 0,
            double d => d == 0,
            string s => double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) && d == 0,
            _ => false,
        };

        /// <summary>Whether a value is kohya's default, across the formats' spellings (64, 64.0 and "64"; false and "false").</summary>
        private static bool Same(object? value, object kohyaDefault) => kohyaDefault switch
        {
            bool b => value is bool v ? v == b : value is string s && bool.TryParse(s, out var p) && p == b,
            long l => value switch
            {
                long v => v == l,
                double d => d == l,
                string s => double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) && d == l,
                _ => false,
            },
            string s => value is string v && string.Equals(v, s, StringComparison.OrdinalIgnoreCase),
            _ => Equals(value, kohyaDefault),
        };

        private static string F(double value) => value.ToString("R", CultureInfo.InvariantCulture);

        private static string Show(object? value) => value switch
        {
            null => "null",
            string s => JsonSerializer.Serialize(s),
            bool b => b ? "true" : "false",
            double d => F(d),
            long l => l.ToString(CultureInfo.InvariantCulture),
            List<object?> list => $"[{string.Join(", ", list.Select(Show))}]",
            _ => value.ToString() ?? "",
        };
    }
}
