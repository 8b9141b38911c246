using SdAppliance.Formats.Hashing;
using System.Collections.Specialized;
using System.Globalization;
using SdAppliance.Formats;
using SdAppliance.Formats.Adapters;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using SdAppliance.Torch.Serialization;
using SdAppliance.Training.Data;
using SdAppliance.Training.Networks;

namespace SdAppliance.Training.Exports;

/// <summary>
/// A trained LoRA as kohya sd-scripts' <c>train_network.py</c> writes it: the network's state dict as a
/// <c>.safetensors</c> file with kohya's <c>ss_*</c> metadata (FORMATS §4.2) and the addnet hashes. Values are
/// strings written as Python's <c>str()</c> and <c>json.dumps</c> write them ("True", "8.0"), because tools
/// compare them as kohya wrote them. Every <c>ss_*</c> field we write is spelled here.
/// </summary>
public static class KohyaLoraExport
{
    public const string NetworkModule = "networks.lora";

    /// <summary>kohya's <c>MODEL_VERSION_SDXL_BASE_V1_0</c>.</summary>
    public const string SdxlBaseVersion = "sdxl_base_v1-0";

    /// <summary>kohya's minimum set (<c>SS_METADATA_MINIMUM_KEYS</c>, kept even with <c>--no_metadata</c>) for a network trained on <paramref name="model"/>.</summary>
    public static Dictionary<string, string> MinimumMetadata(StableDiffusionModel model, LoraNetworkOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        return MinimumMetadata(model.Family, model.PredictionType == "v_prediction", options);
    }

    /// <summary>
    /// <c>ss_v2</c>, <c>ss_base_model_version</c> ("sd_v1", "sd_v2", "sd_v2_v" with v-prediction,
    /// "sdxl_base_v1-0"), <c>ss_network_module</c>, <c>ss_network_dim</c>, <c>ss_network_alpha</c>,
    /// <c>ss_network_dropout</c> when there is dropout, and <c>ss_network_args</c> (JSON of the string
    /// arguments, as kohya gets them from <c>--network_args conv_dim=4 …</c>) only when there are any,
    /// as kohya writes it.
    /// </summary>
    public static Dictionary<string, string> MinimumMetadata(ModelFamily family, bool vPrediction, LoraNetworkOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var version = family switch
        {
            ModelFamily.XlBase => SdxlBaseVersion,
            // kohya's get_model_version_str_for_sd1_sd2.
            ModelFamily.V2 => vPrediction ? "sd_v2_v" : "sd_v2",
            _ => vPrediction ? "sd_v1_v" : "sd_v1",
        };
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["ss_v2"] = PythonText.Bool(family == ModelFamily.V2),
            ["ss_base_model_version"] = version,
            ["ss_network_module"] = NetworkModule,
            ["ss_network_dim"] = Int(options.NetworkDim),
            ["ss_network_alpha"] = PythonText.Float(options.NetworkAlpha),
        };
        if (options.Dropout > 0) metadata["ss_network_dropout"] = PythonText.Float(options.Dropout);
        var args = new Dictionary<string, string>();
        if (options.ConvDim is { } convDim)
        {
            args["conv_dim"] = Int(convDim);
            args["conv_alpha"] = TypedNumber(options.EffectiveConvAlpha);
        }
        if (args.Count > 0) metadata["ss_network_args"] = PythonText.Json(args);
        return metadata;
    }

    /// <summary>
    /// kohya's minimum keys plus every training key of <c>train_network.py</c> we have a value for, for the
    /// result of step <paramref name="step"/> of the run <paramref name="session"/>. kohya hashes the base
    /// model only when it is a file (<c>ss_sd_model_hash</c>: its legacy 8-digit hash, <c>ss_new_sd_model_hash</c>:
    /// the file's SHA-256), and writes <c>None</c> for settings left unset.
    /// </summary>
    public static Dictionary<string, string> Metadata(StableDiffusionModel model, TrainingConfig config, LoraNetworkOptions options, string name, long step,
        KohyaSession session)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(session);
        var m = MinimumMetadata(model, options);
        string F(double v) => PythonText.Float(v);
        m["ss_session_id"] = Int(session.Id);
        m["ss_training_started_at"] = F(session.StartedAt.ToUnixTimeMilliseconds() / 1000.0);
        m["ss_output_name"] = name;
        m["ss_sd_model_name"] = File.Exists(model.SourcePath) ? Path.GetFileName(model.SourcePath) : model.Name;
        if (File.Exists(model.SourcePath))
        {
            m["ss_sd_model_hash"] = FileHashes.LegacyModelHash(model.SourcePath);
            m["ss_new_sd_model_hash"] = FileHashes.Uncached.Sha256(model.SourcePath);
        }
        m["ss_training_comment"] = "None";
        m["ss_network_dropout"] = options.Dropout > 0 ? F(options.Dropout) : "None";
        m["ss_cache_latents"] = PythonText.Bool(config.CachesLatents());
        m["ss_total_batch_size"] = Int((long)config.TrainBatchSize * config.GradientAccumulationSteps);
        m["ss_learning_rate"] = F(config.LearningRate);
        m["ss_text_encoder_lr"] = F(config.ScaledTextEncoderLr());
        m["ss_unet_lr"] = F(config.ScaledLearningRate());
        m["ss_max_train_steps"] = Int(config.MaxTrainSteps);
        m["ss_steps"] = Int(step);
        m["ss_lr_scheduler"] = config.LrScheduler;
        m["ss_lr_warmup_steps"] = Int(config.LrWarmupSteps);
        m["ss_optimizer"] = config.Optimizer;
        m["ss_seed"] = Int(config.Seed);
        m["ss_resolution"] = $"({config.Resolution}, {config.Resolution})";
        m["ss_batch_size_per_device"] = Int(config.TrainBatchSize);
        m["ss_gradient_accumulation_steps"] = Int(config.GradientAccumulationSteps);
        m["ss_gradient_checkpointing"] = PythonText.Bool(config.GradientCheckpointing);
        m["ss_mixed_precision"] = config.MixedPrecision;
        m["ss_max_grad_norm"] = F(config.MaxGradNorm);
        m["ss_clip_skip"] = Int(config.ClipSkip);
        m["ss_noise_offset"] = F(config.NoiseOffset);
        m["ss_min_snr_gamma"] = config.MinSnrGamma is { } g ? F(g) : "None";
        // The loss options, as train_network.py writes them (str(None) for one not given; 0 is "not given" for ip_noise_gamma).
        m["ss_multires_noise_iterations"] = config.MultiresNoiseIterations is { } iterations ? Int(iterations) : "None";
        m["ss_multires_noise_discount"] = F(config.MultiresNoiseDiscount);
        m["ss_zero_terminal_snr"] = PythonText.Bool(config.ZeroTerminalSnr);
        m["ss_ip_noise_gamma"] = config.IpNoiseGamma > 0 ? F(config.IpNoiseGamma) : "None";
        m["ss_loss_type"] = config.LossType;
        m["ss_huber_schedule"] = config.HuberSchedule;
        m["ss_huber_scale"] = F(config.HuberScale);
        m["ss_huber_c"] = F(config.HuberC);
        m["ss_prior_loss_weight"] = F(config.PriorLossWeight);
        m["ss_enable_bucket"] = PythonText.Bool(config.EnableBucket);
        m["ss_flip_aug"] = PythonText.Bool(config.FlipAug);
        m["ss_shuffle_caption"] = PythonText.Bool(config.ShuffleCaption);
        m["ss_keep_tokens"] = Int(config.KeepTokens);
        m["ss_caption_dropout_rate"] = F(config.CaptionDropoutRate);
        m["ss_training_finished_at"] = Int(DateTimeOffset.UtcNow.ToUnixTimeSeconds());
        m["ss_color_aug"] = PythonText.Bool(false);
        m["ss_random_crop"] = PythonText.Bool(!config.CenterCrop);
        m["ss_full_fp16"] = PythonText.Bool(false);
        m["ss_caption_dropout_every_n_epochs"] = "0";
        m["ss_caption_tag_dropout_rate"] = F(0);
        m["ss_min_bucket_reso"] = config.EnableBucket ? Int(config.MinBucketReso) : "None";
        m["ss_max_bucket_reso"] = config.EnableBucket ? Int(config.MaxBucketReso) : "None";
        return m;
    }

    /// <summary>
    /// The dataset keys of <c>train_network.py</c> for a run over <paramref name="dataset"/> that reached epoch
    /// <paramref name="epoch"/> (1-based): image counts (with repeats, as kohya counts them), batches and epochs,
    /// and the JSON ones, each keyed by the image folder's name as kohya keys them: <c>ss_dataset_dirs</c> and
    /// <c>ss_reg_dataset_dirs</c> (<c>{"n_repeats", "img_count"}</c>), <c>ss_tag_frequency</c> (each caption's
    /// comma-separated tags, trimmed and lower-cased, counted once per image) and <c>ss_bucket_info</c>
    /// (<c>{"buckets": {i: {"resolution": [w, h], "count"}}}</c>, with <c>mean_img_ar_error</c> when bucketing).
    /// </summary>
    public static Dictionary<string, string> DatasetMetadata(TrainingDataset dataset, TrainingConfig config, int epoch)
    {
        ArgumentNullException.ThrowIfNull(dataset);
        ArgumentNullException.ThrowIfNull(config);
        var batches = dataset.BatchesPerEpoch(config.TrainBatchSize);
        return new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["ss_num_train_images"] = Int(dataset.Items.Sum(i => (long)i.Repeats)),
            ["ss_num_reg_images"] = Int(dataset.PriorItems.Count),
            ["ss_num_batches_per_epoch"] = Int(batches),
            ["ss_num_epochs"] = Int(config.Epochs(batches)),
            ["ss_max_train_steps"] = Int(config.TotalSteps(batches)),
            ["ss_epoch"] = Int(epoch),
            ["ss_dataset_dirs"] = PythonText.Json(Folders(dataset.Items)),
            ["ss_reg_dataset_dirs"] = PythonText.Json(Folders(dataset.PriorItems)),
            ["ss_tag_frequency"] = PythonText.Json(TagFrequency(dataset.Items)),
            ["ss_bucket_info"] = PythonText.Json(BucketInfo(dataset, config.EnableBucket)),
        };
    }

    private static string FolderName(ImageItem item) => ParquetImages.DatasetFolderName(item.Path);

    private static OrderedDictionary Folders(IEnumerable<ImageItem> items)
    {
        var folders = new OrderedDictionary();
        foreach (var group in items.GroupBy(FolderName))
            folders[group.Key] = new OrderedDictionary { ["n_repeats"] = group.First().Repeats, ["img_count"] = group.Count() };
        return folders;
    }

    private static OrderedDictionary TagFrequency(IEnumerable<ImageItem> items)
    {
        var byFolder = new OrderedDictionary();
        foreach (var group in items.GroupBy(FolderName))
        {
            var tags = new OrderedDictionary();
            foreach (var tag in group.SelectMany(i => i.Caption.Split(',')).Select(t => t.Trim().ToLowerInvariant()).Where(t => t.Length > 0))
                tags[tag] = (tags[tag] is int n ? n : 0) + 1;
            byFolder[group.Key] = tags;
        }
        return byFolder;
    }

    private static OrderedDictionary BucketInfo(TrainingDataset dataset, bool bucketing)
    {
        var counts = dataset.Items.GroupBy(dataset.BucketOf).ToDictionary(g => g.Key, g => g.Sum(i => i.Repeats));
        var buckets = new OrderedDictionary();
        for (var i = 0; i < dataset.Buckets.Count; i++)
            if (counts.TryGetValue(dataset.Buckets[i], out var count))
                buckets[Int(i)] = new OrderedDictionary
                {
                    ["resolution"] = new[] { dataset.Buckets[i].Width, dataset.Buckets[i].Height },
                    ["count"] = count,
                };
        var info = new OrderedDictionary { ["buckets"] = buckets };
        if (bucketing && dataset.Items.Count > 0)
            info["mean_img_ar_error"] = dataset.Items.Average(i =>
            {
                var (w, h) = dataset.BucketOf(i);
                return Math.Abs((double)w / h - (double)i.Width / i.Height);
            });
        return info;
    }

    /// <summary>One training run as kohya identifies it: <c>ss_session_id</c> (a random 32-bit number) and when it started.</summary>
    public sealed record KohyaSession(long Id, DateTimeOffset StartedAt)
    {
        public static KohyaSession Start() => new(Random.Shared.NextInt64(0, 1L << 32), DateTimeOffset.UtcNow);
    }

    /// <summary>
    /// Writes <paramref name="network"/> as a kohya LoRA <c>.safetensors</c> (atomically), in <paramref name="dtype"/>
    /// (default: float32) as kohya's <c>--save_precision</c>. With metadata, the addnet hashes
    /// (<c>sshs_model_hash</c>, <c>sshs_legacy_hash</c>) are added as kohya computes them: over a file
    /// holding the same tensors and only the <c>ss_*</c> metadata.
    /// </summary>
    public static void Save(LoraNetwork network, string path, IReadOnlyDictionary<string, string> metadata, DType? dtype = null)
    {
        ArgumentNullException.ThrowIfNull(network);
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(metadata);
        var target = dtype ?? DType.Float32;
        if (!target.IsFloatingPoint()) throw new ArgumentException($"a LoRA is saved in a floating-point dtype, not {target.TorchName()}", nameof(dtype));
        using var state = network.StateDict();
        var tensors = new StateDict();
        try
        {
            foreach (var (key, value) in state) tensors.Add(key, value.To(Device.Cpu, target, copy: true));
            var meta = new Dictionary<string, string>(metadata, StringComparer.Ordinal);
            if (meta.Count > 0)
            {
                var (modelHash, legacyHash) = PrecalculateHashes(tensors, meta, Path.GetDirectoryName(Path.GetFullPath(path))!);
                meta["sshs_model_hash"] = modelHash;
                meta["sshs_legacy_hash"] = legacyHash;
            }
            TensorFiles.Save(path, tensors, meta);
        }
        finally
        {
            tensors.Dispose();
        }
    }

    /// <summary>
    /// kohya's <c>precalculate_safetensors_hashes</c>: the addnet hashes of a file holding
    /// <paramref name="tensors"/> with only the <c>ss_*</c> keys of <paramref name="metadata"/>
    /// (so that user metadata added later does not change them). The file is written in
    /// <paramref name="scratchFolder"/> and deleted.
    /// </summary>
    private static (string ModelHash, string LegacyHash) PrecalculateHashes(IEnumerable<KeyValuePair<string, Tensor>> tensors,
        IReadOnlyDictionary<string, string> metadata, string scratchFolder)
    {
        var training = metadata.Where(kv => kv.Key.StartsWith("ss_", StringComparison.Ordinal)).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        var scratch = Path.Combine(scratchFolder, $".sshs-{Guid.NewGuid():N}.safetensors");
        try
        {
            TensorFiles.Save(scratch, tensors, training);
            using var stream = File.OpenRead(scratch);
            return (FileHashes.AddNetSha256(stream, scratch), FileHashes.LegacyModelHash(stream));
        }
        finally
        {
            File.Delete(scratch);
        }
    }

    private static string Int(long value) => value.ToString(CultureInfo.InvariantCulture);

    /// <summary>A number as a user types it in <c>--network_args</c>: "1" for 1, "0.5" for 0.5.</summary>
    private static string TypedNumber(double value) =>
        value == Math.Floor(value) && Math.Abs(value) < 1e16 ? value.ToString("0", CultureInfo.InvariantCulture) : value.ToString("R", CultureInfo.InvariantCulture);
}
