using System.Text.Json.Nodes;
using SdAppliance.Formats;
using SdAppliance.Imaging;
using SdAppliance.Training.Runs;

namespace SdAppliance.Training.Tests;

/// <summary>
/// A run whose loss becomes NaN (here: a learning rate of 1e30, which throws the LoRA weights past float range
/// in the first update): its log and report stay valid JSON, and it stops at that step naming it unless
/// <c>stop_on_nan</c> is off.
/// </summary>
[Collection(TrainingCollection.Name)]
public sealed class HostileRunTests : IDisposable
{
    private static readonly string TinyModel = Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sd");
    private readonly string root = Directory.CreateTempSubdirectory("sdapp-nan-").FullName;

    public void Dispose() => Directory.Delete(root, recursive: true);

    private TrainingConfig Diverging(string run)
    {
        var data = Path.Combine(root, "data");
        Directory.CreateDirectory(data);
        for (var i = 0; i < 2; i++)
        {
            ImageCodec.Save(DataTestFolder.Pattern(64, 64, shift: 40 * i), Path.Combine(data, $"img{i}.png"));
            File.WriteAllText(Path.Combine(data, $"img{i}.txt"), "a pattern");
        }
        return new TrainingConfig
        {
            Method = "lora", Model = TinyModel, Data = data, Output = Path.Combine(root, run), Resolution = 64, MaxTrainSteps = 4,
            LearningRate = 1e30, MaxGradNorm = 0, NetworkDim = 4, NetworkAlpha = 4, Seed = 7, SaveEveryNSteps = 1,
        };
    }

    private static List<JsonObject> Log(string run) =>
        [.. File.ReadAllLines(Path.Combine(run, "log.jsonl")).Select(line => JsonNode.Parse(line)!.AsObject())];

    [Fact]
    public void NonFiniteLossStopsTheRunNamingTheStep()
    {
        var config = Diverging("stopped");
        var e = Assert.Throws<LossNotFiniteException>(() => Trainer.Train(config));
        Assert.IsAssignableFrom<UserInputException>(e);
        Assert.Equal("stop_on_nan", e.Subject);
        var log = Log(config.Output!);
        // The run stopped at the first step whose loss was not finite: the log's last line, written as null.
        Assert.Equal(e.Step, log.Count);
        Assert.Null(log[^1]["loss"]);
        Assert.All(log[..^1], line => Assert.True(double.IsFinite(line["loss"]!.GetValue<double>())));
        Assert.Matches($"^loss became (NaN|infinite) at step {e.Step}; the run was stopped", e.Problem);
        // The checkpoints before the step are kept; none is written from the broken weights.
        var checkpoints = Directory.GetDirectories(Path.Combine(config.Output!, "checkpoints")).Select(Path.GetFileName).Order().ToList();
        Assert.Equal(Enumerable.Range(1, (int)e.Step - 1).Select(s => $"step-{s:D6}"), checkpoints.TakeLast((int)e.Step - 1));
        Assert.DoesNotContain($"step-{e.Step:D6}", checkpoints);
    }

    [Fact]
    public void WithStopOnNanOffTheRunEndsAndItsFilesStayValidJson()
    {
        var config = Diverging("on") with { StopOnNan = false };
        var report = Trainer.Train(config);
        Assert.Equal(4, report.Steps);
        Assert.True(double.IsNaN(report.FinalSmoothedLoss));
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(config.Output!, "report.json")))!.AsObject();
        Assert.Null(json["final_smoothed_loss"]);
        Assert.Contains(Log(config.Output!), line => line["loss"] is null);
        Assert.Equal(4, Log(config.Output!).Count);
    }

    [Fact]
    public void StopOnNanIsOnByDefaultAndIsAFlag()
    {
        Assert.True(new TrainingConfig().StopOnNan);
        Assert.False(new TrainingConfig().With(new Dictionary<string, string> { ["stop_on_nan"] = "false" }).StopOnNan);
    }
}
