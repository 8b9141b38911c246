using System.Text.Json;
using System.Text.Json.Nodes;
using SdAppliance.Formats;
using SdAppliance.Training;
using SdAppliance.Training.Distributed;
using SdAppliance.Training.Runs;

using SdAppliance.Appliance.Storage;

namespace SdAppliance.Appliance.Jobs;

/// <summary>
/// Training jobs: the request is a training config (the fields of <c>run.json</c>, as <c>sdapp train --config</c> reads
/// them); the run folder is the job's (<c>runs/ID</c>), its model by default the demo model, relative paths inside the
/// data folder. Resuming continues from the run's last saved state (or starts over when none was saved). Events: each
/// step with its figures, each new sample image, log lines; the device is lent at every step boundary, where the
/// requests of <see cref="JobService.RequestAsync"/> (sample now, save now) are taken too. A run of num_processes ranks
/// holds as many devices and runs as <c>sdapp train</c> does, its ranks in processes of their own
/// (<see cref="ApplianceOptions.TrainingCommand"/>), followed through its log and samples; it lends no device and takes
/// no requests.
/// </summary>
public sealed class TrainingJobRunner(PathGuard paths, ApplianceOptions options) : IJobRunner
{
    public JobKind Kind => JobKind.Training;

    public bool UsesDevice => true;

    public int DevicesWanted(JsonElement request) =>
        request.ValueKind == JsonValueKind.Object && request.TryGetProperty("num_processes", out var n) && n.TryGetInt32(out var count) && count > 1 ? count : 1;

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
        if (context.Device.Contains(','))
        {
            report = RunRanks(context, run, samples, cancellationToken);
        }
        else if (context.Resuming && run.LatestState is { } state && File.Exists(run.ConfigFile))
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

    /// <summary>
    /// The ranks of a run on several devices, started as <c>sdapp train</c> starts them; its steps are read back from the
    /// run's log as rank 0 writes them, its samples from the samples folder.
    /// </summary>
    private TrainingReport RunRanks(JobContext context, RunFolder run, SampleEvents samples, CancellationToken cancellationToken)
    {
        if (options.TrainingCommand.Count == 0)
            throw new TrainingConfigException("num_processes: this appliance cannot start training ranks (it was not started by sdapp serve); train on one device");
        string[] command;
        if (context.Resuming && run.LatestState is { } state && File.Exists(run.ConfigFile))
        {
            run.SaveConfig(TrainingRequests.OnDevices(run.LoadConfig(), context.Device));
            Log(context, $"resuming from {Path.GetFileName(state)} on {context.Device}");
            command = [.. options.TrainingCommand, "--resume", run.Path];
        }
        else
        {
            var config = TrainingRequests.Config(paths, context.Job.Request, run.Path, context.Device);
            if (context.Resuming) run.RemoveUnfinishedWrites();
            Directory.CreateDirectory(run.Path);
            // The ranks read their settings from the run's own run.json, which rank 0 writes again as it starts.
            run.SaveConfig(config);
            Log(context, $"training {config.Method} on {Path.GetFileName(config.Model)} for {config.DescribeLength()} on {context.Device}");
            command = [.. options.TrainingCommand, "--config", run.ConfigFile];
        }

        var lines = new LineWriter(line => Log(context, line));
        var steps = new LogFollower(run.LogFile, new StepEvents(context));
        var launch = Task.Run(() => DataParallelLauncher.Run(run.LoadConfig(), 0, command, lines, lines, StopCode, cancellationToken), CancellationToken.None);
        while (!launch.Wait(TimeSpan.FromMilliseconds(500)))
        {
            steps.PublishNew();
            samples.PublishNew();
        }
        steps.PublishNew();
        var code = launch.Result;
        if (code == StopCode) throw new OperationCanceledException(cancellationToken);
        if (code != 0)
            throw new UserInputException(null, "the training ranks failed: " + string.Join("; ", lines.Recent.Where(l => l.Contains("error:", StringComparison.Ordinal) || l.StartsWith("rank ", StringComparison.Ordinal))));
        return JsonSerializer.Deserialize<TrainingReport>(File.ReadAllText(run.ReportFile), TrainingConfig.Json)!;
    }

    /// <summary>sdapp's exit code for a run stopped on request (128 + SIGINT).</summary>
    private const int StopCode = 130;

    /// <summary>Each line written, to <paramref name="line"/>, the last ones kept.</summary>
    private sealed class LineWriter(Action<string> line) : TextWriter
    {
        private readonly Queue<string> recent = new();

        public override System.Text.Encoding Encoding => System.Text.Encoding.UTF8;

        public IReadOnlyList<string> Recent
        {
            get
            {
                lock (recent) return [.. recent];
            }
        }

        public override void WriteLine(string? value)
        {
            if (value is null) return;
            lock (recent)
            {
                recent.Enqueue(value);
                if (recent.Count > 50) recent.Dequeue();
            }
            line(value);
        }
    }

    /// <summary>The run log's new lines (one JSON object a step), as step events.</summary>
    private sealed class LogFollower(string file, IProgress<TrainingEvent> progress)
    {
        private long position;

        public void PublishNew()
        {
            if (!File.Exists(file)) return;
            using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            stream.Position = position;
            using var reader = new StreamReader(stream);
            while (reader.ReadLine() is { } line)
            {
                // A line still being written has no end yet: read it whole next time.
                if (!line.EndsWith('}')) break;
                position += System.Text.Encoding.UTF8.GetByteCount(line) + 1;
                var e = JsonNode.Parse(line)!;
                double Number(string name) => e[name]?.GetValue<double>() ?? double.NaN;
                progress.Report(new TrainingEvent((long)Number("step"), (long)Number("max_steps"), (int)Number("epoch"), (int)Number("max_epochs"), Number("loss"),
                    Number("smoothed_loss"), Number("lr"), Number("it_per_s"), TimeSpan.FromSeconds(Number("eta_s")), (long)Number("memory_bytes")));
            }
        }
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
