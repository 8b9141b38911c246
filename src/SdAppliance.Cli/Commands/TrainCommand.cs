using System.CommandLine;
using System.Globalization;
using System.Reflection;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using SdAppliance.Appliance.Storage;
using SdAppliance.Formats;
using SdAppliance.Training;
using SdAppliance.Training.Distributed;
using SdAppliance.Training.Kohya;
using SdAppliance.Training.Runs;

namespace SdAppliance.Cli.Commands;

/// <summary>What <c>sdapp train</c> was asked for: a config file, a run to resume, and the settings given as flags (field name → text).</summary>
/// <param name="KohyaConfig">A kohya config (sd-scripts TOML or kohya_ss GUI JSON) read under the config file and the flags.</param>
/// <param name="MachineRank">This machine's place among num_machines (accelerate's --machine_rank).</param>
internal sealed record TrainArguments(string? ConfigFile, string? Resume, IReadOnlyDictionary<string, string> Flags, string? KohyaConfig = null, int MachineRank = 0);

/// <summary>
/// <c>sdapp train</c>: every field of <see cref="TrainingConfig"/> (run.json) is also a flag, <c>--network-dim 16</c>
/// for <c>network_dim</c>; a preset applies first, then the config file, then the flags. <c>--resume RUN_DIR</c>
/// continues a run from its last saved training state. A bar on a terminal, a line every 5% of the run otherwise; the
/// report at the end says where the results are. Ctrl+C stops after the current step. With num_processes or
/// num_machines above 1 it launches this machine's ranks (<see cref="DataParallelLauncher"/>), each of which is this
/// same command told its rank by the environment.
/// </summary>
public static class TrainCommand
{
    /// <summary>Exit code of a run stopped by Ctrl+C (128 + SIGINT, as shells report it).</summary>
    private const int Cancelled = Interrupts.ExitCode;

    public static Command Create() => Create(() => DataFolder.Discover());

    internal static Command Create(Func<DataFolder> paths)
    {
        var config = new Option<string?>("--config", "-c") { Description = "A run.json holding the settings below by their field names (network_dim...); flags override it", HelpName = "FILE" };
        var kohya = new Option<string?>("--kohya-config")
        {
            Description = "A kohya config: sd-scripts' --config_file TOML or a kohya_ss GUI JSON, mapped onto the settings below by their kohya names; --config and the flags override it (kohya's flag spellings, --optimizer_type, --train_data_dir, --network_dim, are accepted too)",
            HelpName = "FILE",
        };
        var resume = new Option<string?>("--resume") { Description = "Continue the run in RUN_DIR from its last saved training state; --max-train-steps sets a new total", HelpName = "RUN_DIR" };
        var machineRank = new Option<int>("--machine-rank")
        {
            Description = "With --num-machines: this machine's number, 0 on the main one (whose --main-process-ip the others reach); it runs ranks machine_rank x num_processes onwards",
            HelpName = "N",
        };
        var fields = TrainingConfig.Fields.Select(f => (Field: TrainingConfig.FieldName(f), Option: FieldOption(f))).ToList();
        // kohya's spellings (--optimizer_type, --train_data_dir, --network_dim) as hidden flags of the same fields, so that
        // --help lists each setting once; given both ways, the later one on the line wins, as with any repeated setting.
        var ownFlags = fields.ToDictionary(f => f.Field, f => f.Option, StringComparer.Ordinal);
        fields.AddRange([.. KohyaConfig.FlagAliases.Select(a => (Field: a.Value, Option: AliasOption(a.Key, ownFlags[a.Value])))]);

        var command = new Command("train", "Fine-tune a model: LoRA, DreamBooth, Textual Inversion, full fine-tune or a hypernetwork. Settings come from a preset, then --config, then the flags.")
        {
            config, kohya, resume, machineRank,
        };
        foreach (var (_, option) in fields) command.Options.Add(option);
        command.SetAction((parse, cancellationToken) =>
        {
            var flags = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var (field, option) in fields.Where(f => parse.GetResult(f.Option) is { Implicit: false })
                         .OrderBy(f => parse.GetResult(f.Option)!.IdentifierToken is { } token ? IndexOf(parse.Tokens, token) : -1))
                flags[field] = parse.GetValue(option) ?? "";  // a bare boolean flag: "" reads as true
            var io = parse.InvocationConfiguration;
            var arguments = new TrainArguments(parse.GetValue(config), parse.GetValue(resume), flags, parse.GetValue(kohya), parse.GetValue(machineRank));
            // Ctrl+C reaches the run through cancellationToken (Interrupts): it stops after the current step.
            return Task.FromResult(Run(arguments, paths(), io.Output, io.Error, cancellationToken));
        });
        return command;
    }

    internal static int Run(TrainArguments args, DataFolder paths, TextWriter output, TextWriter error, CancellationToken cancellationToken = default)
    {
        string? runFolder = null;
        // A rank's own failure is printed whichever rank it is (the launcher tags the line); the rest only by the main rank.
        var failures = error;
        var bar = new ProgressBar(error, ProgressBar.IsTerminal(error), "training", "steps", "it/s");
        var lastStep = 0L;
        try
        {
            // Set by the launcher in each rank it starts.
            var rank = DataParallelRank.FromEnvironment();
            var quiet = rank is { IsMain: false };
            if (quiet) error = TextWriter.Null;
            TrainingConfig config;
            int? resumeTo = null;
            if (args.Resume is { } resume)
            {
                resumeTo = ResumeTarget(args);
                var run = RunFolder.ToResume(resume);
                runFolder = run.Path;
                config = run.LoadConfig();
                error.WriteLine($"resuming the {config.Method} run in {runFolder}" + (resumeTo is { } n ? $" to {n} steps" : ""));
            }
            else
            {
                config = Resolve(args.ConfigFile, args.Flags, paths, args.KohyaConfig, error);
                if (config.DatasetConfig is not null)
                {
                    foreach (var key in KohyaDatasetConfig.Read(config.DatasetConfig).Ignored)
                        error.WriteLine($"note: dataset_config: {key} is kohya's default, which this trainer does not apply; it changes nothing");
                    config = KohyaDatasetConfig.Apply(config);
                }
                config.Validate();  // the trainer validates again; here so that a mistake is the only line printed
                runFolder = config.Output is null ? null : Path.GetFullPath(config.Output);
                error.WriteLine($"training {config.Method} on {config.Model} for {config.DescribeLength()} into {runFolder}");
            }

            if (rank is null && config.WorldSize() > 1)
                return DataParallelLauncher.Run(config, args.MachineRank, SelfCommand.CommandLine(), output, error, Cancelled, cancellationToken);
            var progress = new ProgressCallback<TrainingEvent>(e =>
            {
                lastStep = e.Step;
                // 5% of the run, but at least every 100 steps, so that a long run's log still moves.
                var every = Math.Clamp(e.MaxSteps / 20, 1, 100);
                if (bar.IsInteractive)
                    bar.Update((int)e.Step, (int)e.MaxSteps, Status(e).PadRight(60));  // a shorter line must cover the last one
                else if (e.Step == 1 || e.Step % every == 0 || e.Step == e.MaxSteps)
                    error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"step {e.Step}/{e.MaxSteps}  {Status(e)}"));
            });

            var report = args.Resume is not null
                ? Trainer.Resume(runFolder!, resumeTo, progress, cancellationToken, rank: rank)
                : Trainer.Train(config, progress, cancellationToken, rank: rank);
            bar.Finish();
            if (!quiet) PrintReport(report, output);
            return 0;
        }
        catch (OperationCanceledException)
        {
            bar.Finish();
            PrintStopped(runFolder, lastStep, error);
            return Cancelled;
        }
        catch (UserInputException e)
        {
            bar.Finish();
            failures.WriteLine("error: " + e.Message);
            return 1;
        }
        catch (Exception e)
        {
            bar.Finish();
            return CliErrors.Report(failures, e);
        }
    }

    /// <summary>With --resume the run's own run.json rules; only a new total step count may come with it.</summary>
    private static int? ResumeTarget(TrainArguments args)
    {
        var others = args.Flags.Keys.Where(k => k != "max_train_steps").Select(Flag).ToList();
        if (args.ConfigFile is not null) others.Insert(0, "--config");
        if (args.KohyaConfig is not null) others.Insert(0, "--kohya-config");
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
    internal static TrainingConfig Resolve(string? configFile, IReadOnlyDictionary<string, string> flags, DataFolder paths, string? kohyaConfig = null,
        TextWriter? notes = null)
    {
        var file = new JsonObject();
        if (kohyaConfig is not null)
        {
            if (!File.Exists(kohyaConfig)) throw new UsageException($"--kohya-config '{kohyaConfig}' does not exist");
            var kohya = KohyaConfig.Read(kohyaConfig);
            file = kohya.Settings;
            if (notes is not null)
            {
                foreach (var note in kohya.Notes) notes.WriteLine($"note: kohya config: {note}");
                foreach (var key in kohya.NotApplied) notes.WriteLine($"note: kohya config: not applied: {key}");
                if (kohya.NoEffect.Count > 0) notes.WriteLine($"note: kohya config: without effect here or unset: {string.Join(", ", kohya.NoEffect)}");
            }
        }
        if (configFile is not null)
        {
            if (!File.Exists(configFile)) throw new UsageException($"--config '{configFile}' does not exist");
            // The config file's fields lie over the kohya config's.
            foreach (var (key, value) in TrainingConfig.ParseSettings(File.ReadAllText(configFile), configFile)) file[key] = value?.DeepClone();
        }
        var config = TrainingConfig.FromSettings(file, configFile ?? kohyaConfig ?? "the flags", flags);

        var model = config.Model ?? paths.DemoModel
            ?? throw new TrainingConfigException("model: give the base model (--model PATH); there is no default model (models/demo) here");
        if (!File.Exists(model) && !Directory.Exists(model))
            throw new TrainingConfigException($"model: '{model}' does not exist (give a diffusers folder or a .safetensors/.ckpt file)");
        return config with
        {
            Model = Path.GetFullPath(model),
            Data = Absolute(config.Data),
            Output = Absolute(config.Output),
            Concepts = Absolute(config.Concepts),
            DatasetConfig = Absolute(config.DatasetConfig),
            ClassData = Absolute(config.ClassData),
            ConditioningDataDir = Absolute(config.ConditioningDataDir),
            Vae = Absolute(config.Vae),
        };
    }

    private static string? Absolute(string? path) => string.IsNullOrWhiteSpace(path) ? path : Path.GetFullPath(path);

    private static string Flag(string field) => "--" + field.Replace('_', '-');

    private static string Status(TrainingEvent e) => string.Create(CultureInfo.InvariantCulture,
        $"epoch {e.Epoch}/{e.MaxEpochs}  loss {e.SmoothedLoss:0.0000}  lr {e.LearningRate:0.00e+00}  {e.ItemsPerSecond:0.00} it/s  ETA {ProgressBar.Clock(e.Eta)}");

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
        var latest = new RunFolder(runFolder).LatestState;
        if (latest is null)
            error.WriteLine("no training state was saved yet (--save-every-n-steps sets how often); run the same command to start over");
        else
            error.WriteLine($"the last saved training state is {latest}; continue with: sdapp train --resume {Quote(runFolder)}");
    }

    private static string Quote(string path) => path.Any(c => char.IsWhiteSpace(c) || c is '\'' or '"' or '$' or '\\') ? $"'{path.Replace("'", "'\\''")}'" : path;

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

    private static int IndexOf(IReadOnlyList<System.CommandLine.Parsing.Token> tokens, System.CommandLine.Parsing.Token token)
    {
        for (int i = 0; i < tokens.Count; i++)
            if (ReferenceEquals(tokens[i], token)) return i;
        return -1;
    }

    /// <summary>A kohya spelling of a field's flag: hidden, taking values as the field's own flag does.</summary>
    private static Option<string?> AliasOption(string kohyaName, Option<string?> own) => new("--" + kohyaName)
    {
        Description = own.Description, HelpName = own.HelpName, Arity = own.Arity, Hidden = true,
    };

    private static readonly TrainingConfig Defaults = new();

    private static string Describe(string name, PropertyInfo field)
    {
        // The schedules are too many for the value's placeholder: they follow the description.
        var text = name == "lr_scheduler" ? $"{Descriptions[name]}: {string.Join(", ", Torch.Optim.LrSchedule.Names)}" : Descriptions[name];
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
        "mixed_precision" => string.Join('|', TrainingConfig.PrecisionChoices.Names),
        "optimizer" => string.Join('|', TrainingConfig.Optimizers),
        "loss_type" => string.Join('|', TrainingConfig.LossTypeChoices.Names),
        "huber_schedule" => string.Join('|', TrainingConfig.HuberScheduleChoices.Names),
        "lr_scheduler" => "NAME",
        "sample_prompts" => "P1|P2",
        _ when type == typeof(bool) => "true|false",
        _ when type == typeof(int) || type == typeof(long) => "N",
        _ when type == typeof(double) => "X",
        _ when name is "model" or "data" or "output" or "concepts" or "class_data" or "conditioning_data_dir" or "dataset_config" => "PATH",
        _ => "TEXT",
    };

    private static readonly IReadOnlySet<string> FieldNames = TrainingConfig.Fields.Select(TrainingConfig.FieldName).ToHashSet(StringComparer.Ordinal);

    /// <summary>One line per field for --help, from <see cref="TrainingConfig.Description"/>, with the fields it mentions as flags.</summary>
    internal static IReadOnlyDictionary<string, string> Descriptions { get; } =
        TrainingConfig.Fields.ToDictionary(TrainingConfig.FieldName, f => FieldsAsFlags(TrainingConfig.Description(f)));

    /// <summary>
    /// Library text names settings by their fields (<c>learning_rate</c>); here they are flags (<c>--learning-rate</c>). Only
    /// names with an underscore are taken for fields: one-word fields (data, model) read as plain words in a sentence.
    /// </summary>
    internal static string FieldsAsFlags(string text) =>
        Regex.Replace(text, @"\b[a-z0-9]+(_[a-z0-9]+)+\b", m => FieldNames.Contains(m.Value) ? Flag(m.Value) : m.Value);
}
