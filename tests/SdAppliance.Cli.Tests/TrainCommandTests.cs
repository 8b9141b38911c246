using System.CommandLine;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using SdAppliance.Appliance.Storage;
using SdAppliance.Cli.Commands;
using SdAppliance.Imaging;
using SdAppliance.Models.Adapters;
using SdAppliance.Training;

namespace SdAppliance.Cli.Tests;

/// <summary>
/// <c>sdapp train</c> in-process on the tiny fixture model with a few 64x64 images, two or three steps a run
/// (the numbers trained are the trainer's tests' business; these check the command around it).
/// </summary>
[Collection(TrainCommandCollection.Name)]
public sealed class TrainCommandTests : IDisposable
{
    private static readonly string TinyFolder = GenerateCommandTests.TinyFolder;
    private readonly string temp = Directory.CreateTempSubdirectory("sdapp-train-").FullName;

    public void Dispose() => Directory.Delete(temp, recursive: true);

    /// <summary>Application folders without a demo model, so --model is needed.</summary>
    private DataFolder NoDemo => new(Path.Combine(temp, "appdata"));

    private static (int ExitCode, string Output, string Error) Invoke(DataFolder paths, params string[] args) =>
        GenerateCommandTests.Invoke(new RootCommand { TrainCommand.Create(() => paths) }, ["train", .. args]);

    private string MakeDataset(int count = 3) => MakeDataset(temp, count);

    /// <summary>Red squares on blue at a few positions, each with a caption file, in <paramref name="parent"/>/data.</summary>
    internal static string MakeDataset(string parent, int count = 3)
    {
        var folder = Directory.CreateDirectory(Path.Combine(parent, "data")).FullName;
        for (var i = 0; i < count; i++)
        {
            var image = new RgbImage(64, 64, 3);
            for (var y = 0; y < 64; y++)
                for (var x = 0; x < 64; x++)
                {
                    var inside = x >= 8 + 8 * i && x < 40 + 8 * i && y >= 16 && y < 48;
                    var p = image.Pixel(x, y);
                    p[0] = inside ? (byte)255 : (byte)0;
                    p[1] = 0;
                    p[2] = inside ? (byte)0 : (byte)255;
                }
            ImageCodec.Save(image, Path.Combine(folder, $"img{i}.png"));
            File.WriteAllText(Path.Combine(folder, $"img{i}.txt"), "a red square on a blue background");
        }
        return folder;
    }

    private static void AssertOneCleanErrorLine(string error)
    {
        Assert.StartsWith("error: ", error);
        Assert.Single(error.TrimEnd().Split('\n'));
        Assert.DoesNotContain("   at ", error);
    }

    private static readonly string[] IssueFlags =
    [
        "--method", "--model", "--data", "--output", "--instance-prompt", "--class-prompt", "--class-data", "--num-class-images",
        "--prior-loss-weight", "--resolution", "--train-batch-size", "--gradient-accumulation-steps", "--max-train-steps",
        "--learning-rate", "--lr-scheduler", "--lr-warmup-steps", "--optimizer", "--network-dim", "--network-alpha",
        "--train-text-encoder", "--placeholder-token", "--initializer-token", "--num-vectors", "--mixed-precision",
        "--gradient-checkpointing", "--save-every-n-steps", "--sample-every-n-steps", "--seed", "--resume", "--config", "--preset",
    ];

    [Fact]
    public void HelpListsTheIssuesFlagsWithADescriptionEach()
    {
        var (exit, output, _) = Invoke(NoDemo, "--help");

        Assert.Equal(0, exit);
        foreach (var flag in IssueFlags)
            Assert.Matches($@"(?m)^\s+(-\w, )?{Regex.Escape(flag)} <[^>]+>\s+\w.*$", output);
        Assert.Contains("lora|dreambooth|textual-inversion|finetune|hypernetwork", output);
    }

    [Fact]
    public void EveryConfigFieldIsAFlagWithItsOwnOneLineDescription()
    {
        var fields = TrainingConfig.Fields.Select(TrainingConfig.FieldName).ToList();
        Assert.Equal(fields.Order(), TrainCommand.Descriptions.Keys.Order());
        Assert.All(TrainCommand.Descriptions.Values, d => Assert.DoesNotContain('\n', d));
        var command = TrainCommand.Create(() => NoDemo);
        Assert.All(fields, f => Assert.Contains(command.Options, o => o.Name == "--" + f.Replace('_', '-')));
    }

    [Fact]
    public void HelpTurnsTheFieldsALibraryDescriptionNamesIntoFlags()
    {
        Assert.Equal("The text encoder's learning rate when it trains (default: --learning-rate)", TrainCommand.Descriptions["text_encoder_lr"]);
        // Only fields: a schedule's name with underscores stays as it is.
        Assert.Equal("after --num-class-images, cosine_with_restarts", TrainCommand.FieldsAsFlags("after num_class_images, cosine_with_restarts"));
    }

    [Fact]
    public void ResumingAFolderThatIsNoRunSaysSoNamingTheField()
    {
        var (exit, _, error) = Invoke(NoDemo, "--resume", temp);
        Assert.Equal(1, exit);
        AssertOneCleanErrorLine(error);
        Assert.StartsWith("error: resume: ", error);
        Assert.Contains("run.json", error);
    }

    [Fact]
    public void AKohyaConfigAndKohyasFlagSpellingsTrainWithTheDatasetConfigsFolders()
    {
        var data = MakeDataset();
        var datasetToml = Path.Combine(temp, "dataset.toml");
        File.WriteAllText(datasetToml, $$"""
            [general]
            caption_extension = ".txt"
            color_aug = false

            [[datasets]]
            resolution = 64

              [[datasets.subsets]]
              image_dir = "{{data}}"
              num_repeats = 2
            """);
        var kohyaToml = Path.Combine(temp, "kohya.toml");
        File.WriteAllText(kohyaToml, $$"""
            [model_arguments]
            pretrained_model_name_or_path = "{{TinyFolder}}"

            [training_arguments]
            output_dir = "{{Path.Combine(temp, "run")}}"
            max_train_steps = 50
            optimizer_type = "AdamW8bit"
            save_precision = "bf16"
            xformers = true
            some_future_option = "on"

            [network_arguments]
            network_module = "networks.lora"
            network_dim = 8
            """);

        // kohya's own spellings as flags: --optimizer_type for --optimizer, --dataset_config, --max_train_steps over the file's 50.
        var (exit, output, error) = Invoke(NoDemo, "--kohya-config", kohyaToml, "--dataset_config", datasetToml, "--optimizer_type", "Lion",
            "--max_train_steps", "2", "--network_dim", "4");

        Assert.True(exit == 0, error);
        Assert.Contains("note: kohya config: not applied: some_future_option = \"on\": not a setting this trainer knows", error);
        Assert.Contains("note: kohya config: not applied: save_precision = \"bf16\"", error);
        Assert.Contains("note: dataset_config: general.color_aug = false is kohya's default", error);
        Assert.Contains("trained lora: 2 steps", output);
        var run = JsonNode.Parse(File.ReadAllText(Path.Combine(temp, "run", "run.json")))!;
        Assert.Equal("Lion", (string?)run["optimizer"]);
        Assert.Equal(4, (int?)run["network_dim"]);
        Assert.Equal(64, (int?)run["resolution"]);  // from the dataset config
        Assert.Equal(datasetToml, (string?)run["dataset_config"]);
        Assert.Null(run["data"]);
    }

    [Fact]
    public void ThePresetAppliesUnderTheFileWhichAppliesUnderTheFlags()
    {
        var file = Path.Combine(temp, "run.json");
        // train_batch_size 1 is also the default: the file still overrides the preset's 4 because it spells it out.
        File.WriteAllText(file, """{ "preset": "dreambooth-object", "train_batch_size": 1, "seed": 5, "max_train_steps": 50 }""");

        var config = TrainCommand.Resolve(file, new Dictionary<string, string> { ["model"] = TinyFolder, ["max_train_steps"] = "3" }, NoDemo);
        Assert.Equal("dreambooth-object", config.Preset);
        Assert.Equal("dreambooth", config.Method);  // preset
        Assert.Equal(2e-6, config.LearningRate);  // preset
        Assert.Equal(1, config.TrainBatchSize);  // file over preset
        Assert.Equal(5, config.Seed);  // file over default
        Assert.Equal(3, config.MaxTrainSteps);  // flag over file and preset

        // --preset replaces the file's preset; the file still wins over it.
        var face = TrainCommand.Resolve(file, new Dictionary<string, string> { ["model"] = TinyFolder, ["preset"] = "dreambooth-face" }, NoDemo);
        Assert.Equal("dreambooth-face", face.Preset);
        Assert.Equal(1e-6, face.LearningRate);
        Assert.Equal(200, face.NumClassImages);
        Assert.Equal(1, face.TrainBatchSize);
        Assert.Equal(50, face.MaxTrainSteps);

        // Without file or preset: the defaults, and folders made absolute for run.json.
        var plain = TrainCommand.Resolve(null, new Dictionary<string, string> { ["model"] = TinyFolder, ["output"] = "run1" }, NoDemo);
        Assert.Equal(new TrainingConfig().LearningRate, plain.LearningRate);
        Assert.Equal(Path.GetFullPath("run1"), plain.Output);
    }

    [Fact]
    public void ALoraRunWritesItsResultIntoTheRunFolderAndResumeContinuesItToANewTotal()
    {
        // No --model: the application's models/demo is used.
        var root = Path.Combine(temp, "app");
        GenerateCommandTests.CopyFolder(TinyFolder, Path.Combine(root, "models", "demo"));
        var paths = new DataFolder(Path.Combine(temp, "appdata"), root);
        var run = Path.Combine(temp, "lora-run");
        var file = Path.Combine(temp, "run.json");
        File.WriteAllText(file, $$"""{ "data": {{JsonValue.Create(MakeDataset())!.ToJsonString()}}, "resolution": 64, "network_dim": 8, "max_train_steps": 50 }""");

        var (exit, output, error) = Invoke(paths, "--config", file, "--output", run, "--network-dim", "4", "--network-alpha", "2",
            "--max-train-steps", "2", "--flip-aug", "--center-crop", "false", "--sample-prompts", "a red square|a blue sky");

        Assert.True(exit == 0, error);
        var lora = Path.Combine(run, "lora-run.safetensors");
        Assert.Contains($"result: {lora}", output);
        Assert.Contains("2 steps", output);
        Assert.Contains("step 2/2", error);  // redirected: lines, not a bar
        using (var file1 = LoraFile.Load(lora)) Assert.Equal("4", file1.Metadata["ss_network_dim"]);
        var saved = TrainingConfig.Load(Path.Combine(run, "run.json"));
        Assert.Equal((4, 2.0, 2, true, false), (saved.NetworkDim, saved.NetworkAlpha, saved.MaxTrainSteps, saved.FlipAug, saved.CenterCrop));
        Assert.Equal(["a red square", "a blue sky"], saved.SamplePrompts);
        Assert.Equal(Path.Combine(root, "models", "demo"), saved.Model);

        (exit, output, error) = Invoke(paths, "--resume", run, "--max-train-steps", "3");

        Assert.True(exit == 0, error);
        Assert.Contains("3 steps", output);
        Assert.Equal(3, File.ReadAllLines(Path.Combine(run, "log.jsonl")).Length);
        Assert.True(Directory.Exists(Path.Combine(run, "checkpoints", "step-000003")));
        Assert.Equal(3, TrainingConfig.Load(Path.Combine(run, "run.json")).MaxTrainSteps);

        // Everything else comes from the run's own run.json.
        (exit, _, error) = Invoke(paths, "--resume", run, "--network-dim", "2");
        Assert.Equal(1, exit);
        AssertOneCleanErrorLine(error);
        Assert.Contains("--network-dim", error);
    }

    [Fact]
    public void CtrlCStopsAfterTheStepKeepsTheCheckpointAndSaysHowToResume()
    {
        var run = Path.Combine(temp, "stopped");
        var flags = new Dictionary<string, string>
        {
            ["model"] = TinyFolder, ["data"] = MakeDataset(), ["output"] = run, ["resolution"] = "64", ["network_dim"] = "4",
            ["max_train_steps"] = "4", ["save_every_n_steps"] = "2",
        };
        using var stop = new CancellationTokenSource();
        // What Ctrl+C does to the command: the token is cancelled while step 2 is reported.
        using var error = new CancelOnLine("step 2/4", stop);
        using var output = new StringWriter();

        var exit = TrainCommand.Run(new TrainArguments(null, null, flags), NoDemo, output, error, stop.Token);

        Assert.Equal(130, exit);
        var text = error.ToString();
        Assert.Contains("stopped after step 2", text);
        Assert.Contains(Path.Combine(run, "checkpoints", "step-000002"), text);
        Assert.Contains($"sdapp train --resume {run}", text);
        Assert.False(File.Exists(Path.Combine(run, "stopped.safetensors")), "a stopped run exports nothing");

        var (resumed, resumeOutput, resumeError) = Invoke(NoDemo, "--resume", run);
        Assert.True(resumed == 0, resumeError);
        Assert.Contains("4 steps", resumeOutput);
        Assert.True(File.Exists(Path.Combine(run, "stopped.safetensors")));
    }

    [Theory]
    [InlineData("network_dim", "--network-dim", "0")]
    [InlineData("network_dim", "--network-dim", "many")]
    [InlineData("method", "--method", "magic")]
    [InlineData("train_text_encoder", "--train-text-encoder", "maybe")]
    [InlineData("preset", "--preset", "nope")]
    [InlineData("data", "--data", null)]
    [InlineData("data", "--data", "nowhere")]
    [InlineData("model", "--model", "nowhere")]
    public void ABadValueExitsOneWithOneLineNamingTheField(string field, string flag, string? value)
    {
        var run = Path.Combine(temp, "bad");
        var settings = new Dictionary<string, string?>
        {
            ["--model"] = TinyFolder, ["--data"] = MakeDataset(), ["--output"] = run, ["--resolution"] = "64", ["--max-train-steps"] = "2",
        };
        settings[flag] = value == "nowhere" ? Path.Combine(temp, "nowhere") : value;
        var args = settings.Where(s => s.Value is not null).SelectMany(s => new[] { s.Key, s.Value! }).ToArray();

        var (exit, _, error) = Invoke(NoDemo, args);

        Assert.Equal(1, exit);
        // A folder's contents are the dataset's to judge, after the run's first line says what starts.
        var lines = error.TrimEnd().Split('\n');
        Assert.True(lines.Length == 1 || (lines.Length == 2 && lines[0].StartsWith("training ", StringComparison.Ordinal)), error);
        AssertOneCleanErrorLine(lines[^1]);
        Assert.StartsWith($"error: {field}: ", lines[^1]);
        Assert.False(Directory.Exists(Path.Combine(run, "checkpoints")), "nothing was trained");
    }

    [Fact]
    public void OnATerminalTheBarShowsTheTrainersLossLrRateAndEta()
    {
        using var writer = new StringWriter();
        var bar = new ProgressBar(writer, interactive: true, "training", "steps", "it/s");

        bar.Update(5, 20, "loss 0.1234  lr 1.00e-04  2.00 it/s  ETA 00:07");  // the first update drew nothing before: its clock overflowed
        bar.Finish();

        Assert.Equal("\rtraining [########......................] 5/20 steps  loss 0.1234  lr 1.00e-04  2.00 it/s  ETA 00:07" + Environment.NewLine, writer.ToString());
    }

    /// <summary>A writer that cancels <paramref name="stop"/> when a line containing <paramref name="text"/> is written.</summary>
    private sealed class CancelOnLine(string text, CancellationTokenSource stop) : StringWriter
    {
        public override void WriteLine(string? value)
        {
            base.WriteLine(value);
            if (value?.Contains(text, StringComparison.Ordinal) == true) stop.Cancel();
        }
    }
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TrainCommandCollection
{
    public const string Name = "Train";
}
