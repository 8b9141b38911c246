using System.CommandLine;
using System.Globalization;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using SdAppliance.Training;
using SdAppliance.Training.Data;
using SdAppliance.Training.Runs;

namespace SdAppliance.Cli.Commands;

/// <summary>What <c>sdapp train</c> was asked for: a config file, a run to resume, and the settings given as flags (field name → text).</summary>
internal sealed record TrainArguments(string? ConfigFile, string? Resume, IReadOnlyDictionary<string, string> Flags);

/// <summary>
/// <c>sdapp train</c>: every field of <see cref="TrainingConfig"/> (run.json) is also a flag, <c>--network-dim 16</c>
/// for <c>network_dim</c>; a preset applies first, then the config file, then the flags. <c>--resume RUN_DIR</c>
/// continues a run from its last checkpoint. A bar on a terminal, a line every 5% of the run otherwise; the
/// report at the end says where the results are. Ctrl+C stops after the current step.
/// </summary>
public static class TrainCommand
{
    /// <summary>Exit code of a run stopped by Ctrl+C (128 + SIGINT, as shells report it).</summary>
    private const int Cancelled = 130;

    public static Command Create() => Create(AppPaths.Discover);

    internal static Command Create(Func<AppPaths> paths)
    {
        var config = new Option<string?>("--config", "-c") { Description = "A run.json holding the settings below by their field names (network_dim...); flags override it", HelpName = "FILE" };
        var resume = new Option<string?>("--resume") { Description = "Continue the run in RUN_DIR from its last checkpoint; --max-train-steps sets a new total", HelpName = "RUN_DIR" };
        var fields = TrainingConfig.Fields.Select(f => (Field: TrainingConfig.FieldName(f), Option: FieldOption(f))).ToList();

        var command = new Command("train", "Fine-tune a model: LoRA, DreamBooth, Textual Inversion, full fine-tune or a hypernetwork. Settings come from a preset, then --config, then the flags.")
        {
            config, resume,
        };
        foreach (var (_, option) in fields) command.Options.Add(option);
        command.SetAction((parse, cancellationToken) =>
        {
            var flags = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var (field, option) in fields)
                if (parse.GetResult(option) is { Implicit: false })
                    flags[field] = parse.GetValue(option) ?? "";  // a bare boolean flag: "" reads as true
            var io = parse.InvocationConfiguration;
            // System.CommandLine's own Ctrl+C handling gives an action two seconds and then abandons it; a CPU
            // training step takes longer, and the run should stop between steps. Run installs its own handler.
            io.ProcessTerminationTimeout = null;
            var arguments = new TrainArguments(parse.GetValue(config), parse.GetValue(resume), flags);
            return Task.FromResult(RunWithCtrlC(arguments, paths(), io.Output, io.Error, cancellationToken));
        });
        return command;
    }

    /// <summary>The first Ctrl+C (or SIGTERM) asks the run to stop after its current step; a second one ends the process at once.</summary>
    private static int RunWithCtrlC(TrainArguments arguments, AppPaths paths, TextWriter output, TextWriter error, CancellationToken cancellationToken)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        void OnSignal(PosixSignalContext context)
        {
            if (stop.IsCancellationRequested) return;
            context.Cancel = true;
            error.WriteLine();
            error.WriteLine("stopping after the current step (Ctrl+C again quits at once; the last checkpoint stays intact)");
            stop.Cancel();
        }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        return Run(arguments, paths, output, error, stop.Token);
    }

    internal static int Run(TrainArguments args, AppPaths paths, TextWriter output, TextWriter error, CancellationToken cancellationToken = default)
    {
        string? runFolder = null;
        var bar = new ProgressBar(error, ProgressBar.IsTerminal(error), "training", "steps", "it/s");
        var lastStep = 0L;
        try
        {
            TrainingConfig config;
            int? resumeTo = null;
            if (args.Resume is { } resume)
            {
                resumeTo = ResumeTarget(args);
                runFolder = Path.GetFullPath(resume);
                var runConfig = Path.Combine(runFolder, "run.json");
                if (!File.Exists(runConfig)) throw new TrainingConfigException($"resume: '{runFolder}' is not a run folder (it has no run.json)");
                config = TrainingConfig.Load(runConfig);
                error.WriteLine($"resuming the {config.Method} run in {runFolder}" + (resumeTo is { } n ? $" to {n} steps" : ""));
            }
            else
            {
                config = Resolve(args.ConfigFile, args.Flags, paths);
                config.Validate();  // the trainer validates again; here so that a mistake is the only line printed
                runFolder = config.Output is null ? null : Path.GetFullPath(config.Output);
                error.WriteLine($"training {config.Method} on {config.Model} for {config.MaxTrainSteps} steps into {runFolder}");
            }

            // 5% of the run, but at least every 100 steps, so that a long run's log still moves.
            var every = Math.Clamp((resumeTo ?? config.MaxTrainSteps) / 20, 1, 100);
            var progress = new ProgressCallback<TrainingEvent>(e =>
            {
                lastStep = e.Step;
                if (bar.IsInteractive)
                    bar.Update((int)e.Step, (int)e.MaxSteps, Status(e).PadRight(60));  // a shorter line must cover the last one
                else if (e.Step == 1 || e.Step % every == 0 || e.Step == e.MaxSteps)
                    error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"step {e.Step}/{e.MaxSteps}  {Status(e)}"));
            });

            var report = args.Resume is not null
                ? Trainer.Resume(runFolder!, resumeTo, progress, cancellationToken)
                : Trainer.Train(config, progress, cancellationToken);
            bar.Finish();
            PrintReport(report, output);
            return 0;
        }
        catch (OperationCanceledException)
        {
            bar.Finish();
            PrintStopped(runFolder, lastStep, error);
            return Cancelled;
        }
        catch (Exception e) when (e is TrainingConfigException or DatasetException)
        {
            bar.Finish();
            error.WriteLine("error: " + (e is DatasetException d ? DatasetMessage(d) : e.Message));
            return 1;
        }
        catch (Exception e)
        {
            bar.Finish();
            return CliErrors.Report(error, e);
        }
    }

    /// <summary>With --resume the run's own run.json rules; only a new total step count may come with it.</summary>
    private static int? ResumeTarget(TrainArguments args)
    {
        var others = args.Flags.Keys.Where(k => k != "max_train_steps").Select(Flag).ToList();
        if (args.ConfigFile is not null) others.Insert(0, "--config");
        if (others.Count > 0)
            throw new UsageException($"--resume continues the run as its run.json describes it; only --max-train-steps may come with it (got {string.Join(", ", others)})");
        if (!args.Flags.TryGetValue("max_train_steps", out var text)) return null;
        var total = new TrainingConfig().With(new Dictionary<string, string> { ["max_train_steps"] = text }).MaxTrainSteps;
        // Checked here: the trainer records the new total in run.json before it validates the config.
        if (total < 1) throw new TrainingConfigException($"max_train_steps: {total} must be at least 1");
        return total;
    }

    /// <summary>
    /// The run's settings: the preset (named by --preset or the file's <c>preset</c>), then the file's fields, then
    /// the flags; the model defaults to models/demo; folders become absolute so run.json resumes from anywhere.
    /// </summary>
    internal static TrainingConfig Resolve(string? configFile, IReadOnlyDictionary<string, string> flags, AppPaths paths)
    {
        var file = new JsonObject();
        if (configFile is not null)
        {
            if (!File.Exists(configFile)) throw new UsageException($"--config '{configFile}' does not exist");
            try
            {
                file = JsonNode.Parse(File.ReadAllText(configFile), documentOptions: new JsonDocumentOptions
                {
                    CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true,
                }) as JsonObject ?? throw new TrainingConfigException($"'{configFile}' must hold one JSON object of settings");
            }
            catch (JsonException e)
            {
                throw new TrainingConfigException($"'{configFile}' is not valid JSON: {e.Message}");
            }
            var fields = TrainingConfig.Fields.Select(TrainingConfig.FieldName).ToHashSet(StringComparer.Ordinal);
            foreach (var (key, _) in file)
                if (!fields.Contains(key))
                    throw new TrainingConfigException($"{key}: not a setting (in '{configFile}'); valid ones: {string.Join(", ", fields)}");
            TrainingConfig.Load(configFile);  // a value of the wrong type: the message names the file and the field's path
        }

        var preset = flags.TryGetValue("preset", out var name) ? name : file["preset"]?.GetValue<string>();
        var config = new TrainingConfig();
        if (preset is not null) config = config.With(TrainingPresets.Get(preset));
        // Only the fields the file spells out override the preset, so the file is laid over it as JSON.
        var merged = JsonSerializer.SerializeToNode(config, TrainingConfig.Json)!.AsObject();
        foreach (var (key, value) in file) merged[key] = value?.DeepClone();
        config = merged.Deserialize<TrainingConfig>(TrainingConfig.Json)!.With(flags);

        var model = config.Model ?? paths.DefaultModel
            ?? throw new TrainingConfigException("model: give the base model (--model PATH); there is no default model (models/demo) here");
        if (!File.Exists(model) && !Directory.Exists(model))
            throw new TrainingConfigException($"model: '{model}' does not exist (give a diffusers folder or a .safetensors/.ckpt file)");
        return config with
        {
            Model = Path.GetFullPath(model),
            Data = Absolute(config.Data),
            Output = Absolute(config.Output),
            Concepts = Absolute(config.Concepts),
            ClassData = Absolute(config.ClassData),
        };
    }

    private static string? Absolute(string? path) => string.IsNullOrWhiteSpace(path) ? path : Path.GetFullPath(path);

    private static string Flag(string field) => "--" + field.Replace('_', '-');

    private static string Status(TrainingEvent e) => string.Create(CultureInfo.InvariantCulture,
        $"loss {e.SmoothedLoss:0.0000}  lr {e.LearningRate:0.00e+00}  {e.ItemsPerSecond:0.00} it/s  ETA {ProgressBar.Clock(e.Eta)}");

    private static void PrintReport(TrainingReport report, TextWriter output)
    {
        var w = output;
        w.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"trained {report.Method}: {report.Steps} steps, {report.Epochs} epoch{(report.Epochs == 1 ? "" : "s")} in {ProgressBar.Clock(report.Duration)}, final loss {report.FinalSmoothedLoss:0.0000} (smoothed)"));
        if (report.SkippedFiles.Count > 0)
        {
            w.WriteLine($"skipped {report.SkippedFiles.Count} file{(report.SkippedFiles.Count == 1 ? "" : "s")}:");
            foreach (var s in report.SkippedFiles) w.WriteLine($"  {s.Path}: {s.Reason}");
        }
        w.WriteLine($"run folder: {report.RunFolder} (run.json, log.jsonl, tensorboard/, checkpoints/, report.json)");
        foreach (var file in report.Outputs) w.WriteLine($"result: {file}");
        if (report.Samples.Count > 0) w.WriteLine($"samples: {report.Samples.Count} images in {Path.GetDirectoryName(report.Samples[0])}");
        w.WriteLine($"to train further: sdapp train --resume {Quote(report.RunFolder)} --max-train-steps N");
    }

    private static void PrintStopped(string? runFolder, long lastStep, TextWriter error)
    {
        error.WriteLine(lastStep > 0 ? $"stopped after step {lastStep}" : "stopped before the first step");
        if (runFolder is null) return;
        var checkpoints = Path.Combine(runFolder, "checkpoints");
        var latest = Directory.Exists(checkpoints)
            ? Directory.EnumerateDirectories(checkpoints, "step-*").Where(d => File.Exists(Path.Combine(d, "state.json"))).Order(StringComparer.Ordinal).LastOrDefault()
            : null;
        if (latest is null)
            error.WriteLine("no checkpoint was saved yet (--save-every-n-steps sets how often); run the same command to start over");
        else
            error.WriteLine($"the last checkpoint is {latest}; continue with: sdapp train --resume {Quote(runFolder)}");
    }

    private static string Quote(string path) => path.Any(c => char.IsWhiteSpace(c) || c is '\'' or '"' or '$' or '\\') ? $"'{path.Replace("'", "'\\''")}'" : path;

    /// <summary>The dataset names its options as <see cref="DatasetOptions"/> spells them (DataDir); the user knows them as flags' fields (data).</summary>
    private static string DatasetMessage(DatasetException e)
    {
        var names = typeof(DatasetOptions).GetProperties().Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
        return Regex.Replace(e.Message, @"\b[A-Z][A-Za-z]+\b", m => names.Contains(m.Value) ? DatasetField(m.Value) : m.Value);
    }

    private static string DatasetField(string option) => option switch
    {
        "DataDir" => "data",
        "ClassDataDir" => "class_data",
        _ => JsonNamingPolicy.SnakeCaseLower.ConvertName(option),
    };

    /// <summary>A field's flag: text for every type, so a bad value is reported by <see cref="TrainingConfig.With"/> naming the field.</summary>
    private static Option<string?> FieldOption(PropertyInfo field)
    {
        var name = TrainingConfig.FieldName(field);
        var type = Nullable.GetUnderlyingType(field.PropertyType) ?? field.PropertyType;
        var isBool = type == typeof(bool);
        var option = new Option<string?>(Flag(name))
        {
            Description = Describe(name, field),
            HelpName = HelpName(name, type),
            // A boolean is true by its presence, or takes true/false.
            Arity = isBool ? ArgumentArity.ZeroOrOne : ArgumentArity.ExactlyOne,
        };
        return option;
    }

    private static readonly TrainingConfig Defaults = new();

    private static string Describe(string name, PropertyInfo field)
    {
        var text = Descriptions.TryGetValue(name, out var d) ? d : name.Replace('_', ' ');
        var value = field.GetValue(Defaults);
        var shown = value switch
        {
            null => null,
            bool b => b ? "true" : null,
            IReadOnlyList<string> list => list.Count == 0 ? null : string.Join('|', list),
            IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
            _ => value.ToString(),
        };
        return shown is null ? text : $"{text} [default: {shown}]";
    }

    private static string HelpName(string name, Type type) => name switch
    {
        "method" => string.Join('|', TrainingConfig.Methods),
        "preset" => string.Join('|', TrainingPresets.All.Keys),
        "mixed_precision" => "no|fp16|bf16",
        "optimizer" => string.Join('|', TrainingConfig.Optimizers),
        "lr_scheduler" => "NAME",
        "sample_prompts" => "P1|P2",
        _ when type == typeof(bool) => "true|false",
        _ when type == typeof(int) || type == typeof(long) => "N",
        _ when type == typeof(double) => "X",
        _ when name is "model" or "data" or "output" or "concepts" or "class_data" => "PATH",
        _ => "TEXT",
    };

    /// <summary>One line per field for --help; a test checks that every field has one.</summary>
    internal static readonly IReadOnlyDictionary<string, string> Descriptions = new Dictionary<string, string>
    {
        ["method"] = "What to train: LoRA, DreamBooth (full UNet), textual inversion, full fine-tune (EMA) or a hypernetwork",
        ["preset"] = "A recipe applied before --config and the flags (README: Training presets)",
        ["model"] = "The base model: a diffusers folder or a .safetensors/.ckpt file (default: models/demo when present)",
        ["data"] = "The image folder: captions in same-name .txt files, kohya N_name sub-folders repeat N times",
        ["output"] = "The run folder: run.json, log, checkpoints, samples, report and the results",
        ["concepts"] = "A DreamBooth concepts list (JSON: instance_prompt, class_prompt, instance_data_dir, class_data_dir)",
        ["output_name"] = "The results' file name (default: the run folder's name)",
        ["instance_prompt"] = "The caption of images without a caption file (DreamBooth: \"a photo of sks dog\")",
        ["class_prompt"] = "Prior preservation: the class prompt (\"a photo of a dog\"); missing class images are generated with it",
        ["class_data"] = "Prior preservation: the folder of class images (generated there when fewer than --num-class-images)",
        ["num_class_images"] = "Prior preservation: how many class images to use (and generate when missing)",
        ["prior_loss_weight"] = "Prior preservation: the weight of the class images' loss",
        ["caption_extension"] = "The caption files' extension",
        ["resolution"] = "Training size in pixels (square; the bucket area with --enable-bucket)",
        ["center_crop"] = "Crop the center (false: a random window each time)",
        ["enable_bucket"] = "Aspect-ratio bucketing: each image trains at the bucket nearest its aspect ratio",
        ["min_bucket_reso"] = "Bucketing: the smallest side of a bucket",
        ["max_bucket_reso"] = "Bucketing: the largest side of a bucket",
        ["flip_aug"] = "Randomly mirror images horizontally",
        ["shuffle_caption"] = "Shuffle the comma-separated caption tags each time",
        ["keep_tokens"] = "Caption shuffle leaves the first N tags in place",
        ["caption_dropout_rate"] = "The share of examples trained with an empty caption",
        ["cache_latents"] = "Encode each image with the VAE once",
        ["cache_latents_to_disk"] = "Keep the latent cache on disk next to the images (edits invalidate it)",
        ["train_batch_size"] = "Images per batch",
        ["gradient_accumulation_steps"] = "Batches per optimizer step",
        ["max_train_steps"] = "Optimizer steps to train (with --resume: the new total)",
        ["learning_rate"] = "The learning rate (the UNet's, or the embedding's for textual inversion)",
        ["text_encoder_lr"] = "The text encoder's learning rate when it trains (default: --learning-rate)",
        ["lr_scheduler"] = "LR schedule: " + string.Join(", ", Torch.Optim.LrSchedule.Names),
        ["lr_warmup_steps"] = "Steps of linear warmup at the start",
        ["lr_num_cycles"] = "Restarts of cosine_with_restarts",
        ["lr_power"] = "The power of the polynomial schedule",
        ["optimizer"] = "The optimizer",
        ["adam_beta1"] = "Adam/AdamW beta1",
        ["adam_beta2"] = "Adam/AdamW beta2",
        ["adam_weight_decay"] = "AdamW/Lion weight decay",
        ["adam_epsilon"] = "Adam/AdamW epsilon",
        ["max_grad_norm"] = "Clip the gradient norm to this (0: no clipping)",
        ["min_snr_gamma"] = "Min-SNR-gamma loss weighting (5 is the paper's value; off when not given)",
        ["noise_offset"] = "Noise offset (0.05-0.1 helps very dark and bright images)",
        ["mixed_precision"] = "Autocast on CUDA: bf16, or fp16 with loss scaling (CPU: no or bf16)",
        ["gradient_checkpointing"] = "Recompute UNet activations in the backward pass: less memory, slower",
        ["clip_skip"] = "1 = the text encoder's last layer, 2 = the penultimate (A1111 numbering)",
        ["seed"] = "Seed of everything: data order, augmentation, noise, timesteps",
        ["device"] = "cpu, cuda or cuda:N",
        ["network_dim"] = "LoRA rank",
        ["network_alpha"] = "LoRA alpha (the update is scaled by alpha/rank)",
        ["network_dropout"] = "LoRA dropout",
        ["conv_dim"] = "LoCon: also train the 3x3 convolutions, at this rank",
        ["conv_alpha"] = "LoCon alpha (default: --network-alpha)",
        ["train_text_encoder"] = "LoRA and DreamBooth: train the text encoder(s) too",
        ["placeholder_token"] = "Textual inversion: the new word, used in the captions or --instance-prompt",
        ["initializer_token"] = "Textual inversion: the word whose embedding the new one starts from",
        ["num_vectors"] = "Textual inversion: vectors per token",
        ["hypernetwork_layer_structure"] = "Hypernetwork: the layer widths as multiples of the input, starting and ending with 1",
        ["hypernetwork_activation"] = "Hypernetwork: the activation between layers (linear, relu, swish...)",
        ["use_ema"] = "Full fine-tune: keep an exponential moving average of the weights and export it",
        ["ema_decay"] = "Full fine-tune: the EMA's decay",
        ["save_every_n_steps"] = "Save a checkpoint every N steps (one is always saved at the end)",
        ["save_last_k"] = "Keep only the last K checkpoints",
        ["sample_every_n_steps"] = "Draw sample images every N steps into samples/",
        ["sample_prompts"] = "The sample prompts, separated by | (default: the instance prompt or the first caption)",
        ["sample_seed"] = "Seed of the first sample prompt (the next ones count up)",
        ["sample_steps"] = "Sampler steps of the samples (and of generated class images)",
        ["sample_sampler"] = "Sampler of the samples (and of generated class images)",
        ["save_fp16"] = "Write the results in float16",
        ["save_diffusers"] = "DreamBooth and fine-tune: also write a diffusers folder",
    };
}
