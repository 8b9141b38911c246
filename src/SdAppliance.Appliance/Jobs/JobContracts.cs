using System.Text.Json;

namespace SdAppliance.Appliance.Jobs;

/// <summary>A job as services, the API and the UI see it.</summary>
public sealed record JobView(
    Guid Id, JobKind Kind, JobState State, string OwnerId, int Priority,
    DateTime CreatedUtc, DateTime? StartedUtc, DateTime? FinishedUtc,
    long Step, long TotalSteps, string? Error, JsonElement Request, JsonElement? Result)
{
    /// <summary>The device it runs (or last ran) on; null before it started.</summary>
    public string? Device { get; init; }

    /// <summary>How often it was started (more than once after a restart or a resume).</summary>
    public int Attempts { get; init; }

    /// <summary>Its folder relative to the data folder: <c>runs/ID</c> for training (the run folder), <c>jobs/ID</c> otherwise.</summary>
    public string Folder { get; init; } = "";
}

/// <summary>What to run: the kind's request (serialised to JSON as it is stored), for whom, how urgently.</summary>
public sealed record JobSubmission(JobKind Kind, string OwnerId, JsonElement Request, int Priority = 0);

/// <summary>
/// One thing that happened to a job, in order (<see cref="Sequence"/> counts from 1): its state, a step with its
/// figures, a new image, a log line. Fields that do not apply are null.
/// </summary>
public sealed record JobEvent(long Sequence, DateTime TimeUtc, string Type)
{
    public JobState? State { get; init; }
    public long? Step { get; init; }
    public long? TotalSteps { get; init; }

    /// <summary>A training step's epoch, from 1, and the epochs of the run (kohya's count: every image times its repeats once).</summary>
    public int? Epoch { get; init; }
    public int? TotalEpochs { get; init; }

    public double? Loss { get; init; }
    public double? SmoothedLoss { get; init; }
    public double? LearningRate { get; init; }
    public double? ItPerSecond { get; init; }
    public double? EtaSeconds { get; init; }
    public long? MemoryBytes { get; init; }

    /// <summary>A new image (a sample, a generated picture), relative to the data folder.</summary>
    public string? Image { get; init; }

    public string? Message { get; init; }
}

/// <summary>What a running training job can be asked to do at its next step (<see cref="JobService.RequestAsync"/>).</summary>
public enum RunRequest
{
    /// <summary>Draw the sample images now.</summary>
    Sample,

    /// <summary>Save a training state and the results so far (<c>NAME-step-NNNNNN</c> files in the run folder).</summary>
    Save,
}

/// <summary>Runs jobs of one kind; the scheduler calls it on a device it holds for the job.</summary>
public interface IJobRunner
{
    JobKind Kind { get; }

    /// <summary>GPU-heavy: holds its device alone while it runs (training, generation); false for light work.</summary>
    bool UsesDevice { get; }

    /// <summary>How many devices a job of this request holds while it runs (a data-parallel training run: one per rank).</summary>
    int DevicesWanted(JsonElement request) => UsesDevice ? 1 : 0;

    /// <summary>Runs (or resumes, <see cref="JobContext.Resuming"/>) the job; returns its result, stored as the job's JSON result.</summary>
    Task<JsonElement?> RunAsync(JobContext context, CancellationToken cancellationToken);

    /// <summary>
    /// Refuses a request that cannot run (a <see cref="SdAppliance.Formats.UserInputException"/> naming the field) before it
    /// is queued; <see cref="JobService.SubmitAsync"/> calls it. What only running can tell is left to <see cref="RunAsync"/>.
    /// </summary>
    void Check(JsonElement request)
    {
    }
}

/// <summary>What a runner gets: the job, its folder, its device, where its events go, and the step boundary it yields at.</summary>
public sealed class JobContext
{
    public required JobView Job { get; init; }

    /// <summary>The job's own folder (a run folder for training), created before the runner starts.</summary>
    public required string Folder { get; init; }

    /// <summary>The device the scheduler gave it ("cpu", "cuda:0").</summary>
    public required string Device { get; init; }

    /// <summary>True when the job ran before (a restart): continue from what it saved.</summary>
    public bool Resuming { get; init; }

    /// <summary>Publishes an event (its sequence and time are filled in).</summary>
    public required Action<JobEvent> Publish { get; init; }

    /// <summary>
    /// Called by long runners between steps: when other jobs wait for this device (a generation during training), they
    /// run now and this returns after them; the runner's own state must not change meanwhile.
    /// </summary>
    public required Func<CancellationToken, Task> StepBoundary { get; init; }

    /// <summary>Training: the requests made to the run (<see cref="JobService.RequestAsync"/>), for the trainer to take at its step boundaries.</summary>
    public SdAppliance.Training.Runs.RunControl? Control { get; init; }
}
