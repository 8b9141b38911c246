using System.Text.Json;
using System.Text.Json.Nodes;
using SdAppliance.Training;
using SdAppliance.Training.Runs;

using SdAppliance.Appliance.Storage;

namespace SdAppliance.Appliance.Jobs;

/// <summary>
/// Training jobs: the request is a training config (the fields of <c>run.json</c>, as <c>sdapp train --config</c> reads
/// them); the run folder is the job's (<c>runs/ID</c>), its model by default the demo model, relative paths inside the
/// data folder. Resuming continues from the run's last saved state (or starts over when none was saved). Events: each
/// step with its figures, each new sample image, log lines; the device is lent at every step boundary, where the
/// requests of <see cref="JobService.RequestAsync"/> (sample now, save now) are taken too.
/// </summary>
public sealed class TrainingJobRunner(PathGuard paths) : IJobRunner
{
    public JobKind Kind => JobKind.Training;

    public bool UsesDevice => true;

    public void Check(JsonElement request) => TrainingRequests.Check(paths, request);

    public Task<JsonElement?> RunAsync(JobContext context, CancellationToken cancellationToken) =>
        // The trainer is synchronous and long: its own thread, not the pool's.
        Task.Factory.StartNew(() => Run(context, cancellationToken), cancellationToken, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    private JsonElement? Run(JobContext context, CancellationToken cancellationToken)
    {
        var run = new RunFolder(context.Folder);
        var samples = new SampleEvents(run, context, paths.Data);
        var progress = new StepEvents(context);
        var control = context.Control ?? new RunControl();
        control.Done = what => Log(context, what);
        void Boundary()
        {
            samples.PublishNew();
            context.StepBoundary(cancellationToken).GetAwaiter().GetResult();
        }

        TrainingReport report;
        if (context.Resuming && run.LatestState is { } state && File.Exists(run.ConfigFile))
        {
            var config = run.LoadConfig();
            if (config.DeviceName != context.Device) run.SaveConfig(config with { DeviceName = context.Device });
            Log(context, $"resuming from {Path.GetFileName(state)}");
            report = Trainer.Resume(run.Path, null, progress, cancellationToken, Boundary, control);
        }
        else
        {
            var config = TrainingRequests.Config(paths, context.Job.Request, run.Path, context.Device);
            // A run stopped before its first saved state starts over; what it half wrote goes first.
            if (context.Resuming) run.RemoveUnfinishedWrites();
            Log(context, $"training {config.Method} on {Path.GetFileName(config.Model)} for {config.DescribeLength()}");
            report = Trainer.Train(config, progress, cancellationToken, Boundary, control);
        }
        samples.PublishNew();
        Log(context, $"trained {report.Steps} steps, final loss {report.FinalSmoothedLoss:0.0000} (smoothed)");
        return JsonSerializer.SerializeToElement(new JsonObject
        {
            ["run_folder"] = paths.Data.Relative(report.RunFolder),
            ["method"] = report.Method,
            ["steps"] = report.Steps,
            ["epochs"] = report.Epochs,
            ["final_smoothed_loss"] = double.IsFinite(report.FinalSmoothedLoss) ? report.FinalSmoothedLoss : null,
            ["outputs"] = new JsonArray([.. report.Outputs.Select(o => (JsonNode)paths.Data.Relative(o))]),
            ["samples"] = new JsonArray([.. report.Samples.Select(o => (JsonNode)paths.Data.Relative(o))]),
            ["skipped_files"] = report.SkippedFiles.Count,
        });
    }

    private static void Log(JobContext context, string message) =>
        context.Publish(new JobEvent(0, default, JobEventTypes.Log) { Message = message });

    /// <summary>Each optimizer step as a step event.</summary>
    private sealed class StepEvents(JobContext context) : IProgress<TrainingEvent>
    {
        public void Report(TrainingEvent value) => context.Publish(new JobEvent(0, default, JobEventTypes.Step)
        {
            Step = value.Step, TotalSteps = value.MaxSteps, Epoch = value.Epoch, TotalEpochs = value.MaxEpochs, Loss = value.Loss, SmoothedLoss = value.SmoothedLoss, LearningRate = value.LearningRate,
            ItPerSecond = value.ItemsPerSecond, EtaSeconds = value.Eta.TotalSeconds, MemoryBytes = value.MemoryBytes,
        });
    }

    /// <summary>The sample images the trainer wrote since the last look, as image events.</summary>
    private sealed class SampleEvents(RunFolder run, JobContext context, DataFolder data)
    {
        private readonly HashSet<string> published = Directory.Exists(run.SamplesFolder)
            ? [.. Directory.EnumerateFiles(run.SamplesFolder, "*.png")]
            : [];

        public void PublishNew()
        {
            if (!Directory.Exists(run.SamplesFolder)) return;
            foreach (var file in Directory.EnumerateFiles(run.SamplesFolder, "step-*.png").Order(StringComparer.Ordinal))
                if (published.Add(file))
                    context.Publish(new JobEvent(0, default, JobEventTypes.Image) { Image = data.Relative(file) });
        }
    }
}
