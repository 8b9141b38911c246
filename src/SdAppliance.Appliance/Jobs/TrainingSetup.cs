using System.Collections.Concurrent;
using SdAppliance.Appliance.Catalog;
using SdAppliance.Appliance.Storage;
using SdAppliance.Formats;
using SdAppliance.Training;
using SdAppliance.Training.Data;

namespace SdAppliance.Appliance.Jobs;

/// <summary>
/// Setting up a training run from a form (<see cref="TrainingForm"/>): its plan (epochs, steps and a time estimate)
/// and its start as a training job through <see cref="JobService"/>, whose check is the training layer's own validation
/// (a <see cref="UserInputException"/> whose <see cref="UserInputException.Subject"/> names the field).
/// </summary>
public sealed class TrainingSetup(JobService jobs, JobScheduler scheduler, PathGuard paths, DataFolder data)
{
    /// <summary>Measured speeds of finished runs, by job: they never change.</summary>
    private readonly ConcurrentDictionary<Guid, double?> speeds = new();

    /// <summary>The request path of a base model: none for the demo model (a job's default), else its path in the data folder (or its full path in an import root).</summary>
    public string? ModelPath(ModelEntry model)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (model.IsDemo) return null;
        var relative = data.Relative(model.Path);
        return relative.StartsWith("..", StringComparison.Ordinal) || Path.IsPathRooted(relative) ? model.Path : relative;
    }

    /// <summary>Queues the run; a setting that cannot run is refused naming its field before anything is queued.</summary>
    public Task<JobView> StartAsync(Caller caller, TrainingForm form, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(caller);
        return jobs.SubmitAsync(new JobSubmission(JobKind.Training, caller.UserId, TrainingSettings.Request(form)), cancellationToken);
    }

    /// <summary>
    /// The run's plan: its dataset scanned (image headers only) as the trainer scans it, the trainer's epoch count, and
    /// the time from the speed of earlier runs on this appliance's devices. Settings that cannot run are refused as
    /// <see cref="StartAsync"/> refuses them.
    /// </summary>
    public async Task<TrainingPlan> PlanAsync(Caller caller, TrainingForm form, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(caller);
        var request = TrainingSettings.Request(form);
        var config = TrainingRequests.Config(paths, request, Path.Combine(data.Runs, "plan"), "cpu");
        var dataset = await Task.Run(() => TrainingDataset.Scan(DatasetOptions.Of(config) with { VerifyImages = false }, cancellationToken), cancellationToken);
        var planned = TrainingConfig.FromSettings(TrainingConfig.ParseSettings(request.GetRawText(), "request"), "request");
        var batchesPerEpoch = dataset.BatchesPerEpoch(config.TrainBatchSize);
        var estimate = TrainingEstimates.Estimate(planned, config.TotalSteps(batchesPerEpoch), await MeasuredAsync(cancellationToken));
        return TrainingPlan.Of(dataset.Items.Count, dataset.ExamplesPerEpoch, batchesPerEpoch, dataset.Skipped.Count, config, estimate);
    }

    /// <summary>
    /// The speeds of the newest finished training runs on the scheduler's devices, every user's: the speed is the
    /// device's, and only that figure (with the run's settings in <see cref="TrainingTimeEstimate.Basis"/>) leaves here.
    /// </summary>
    private async Task<List<MeasuredRun>> MeasuredAsync(CancellationToken cancellationToken)
    {
        var everyone = new Caller("training-estimates", IsAdmin: true);
        var devices = scheduler.Devices;
        var finished = (await jobs.ListAsync(everyone, null, cancellationToken))
            .Where(j => j.Kind == JobKind.Training && JobStates.IsFinal(j.State) && j.Step > 0 && j.Device is { } d && devices.Contains(d))
            .OrderByDescending(j => j.FinishedUtc)
            .Take(20);
        var measured = new List<MeasuredRun>();
        foreach (var job in finished)
        {
            if (!speeds.TryGetValue(job.Id, out var speed))
                speeds[job.Id] = speed = await LastSpeedAsync(job.Id, cancellationToken);
            if (speed is not { } rate) continue;
            TrainingConfig config;
            try
            {
                config = TrainingConfig.FromSettings(TrainingConfig.ParseSettings(job.Request.GetRawText(), "request"), "request");
            }
            catch (UserInputException)
            {
                continue;  // a request of an older version: its speed cannot be matched to settings
            }
            measured.Add(new MeasuredRun(job.Device!, job.FinishedUtc ?? job.CreatedUtc, config, rate));
        }
        return measured;
    }

    private async Task<double?> LastSpeedAsync(Guid job, CancellationToken cancellationToken)
    {
        double? last = null;
        await foreach (var e in jobs.EventsAsync(job, 0, cancellationToken))
            if (e.Type == JobEventTypes.Step && e.ItPerSecond is { } rate && double.IsFinite(rate) && rate > 0) last = rate;
        return last;
    }
}
