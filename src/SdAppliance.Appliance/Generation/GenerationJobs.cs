using SdAppliance.Appliance.Jobs;

namespace SdAppliance.Appliance.Generation;

/// <summary>The generation job failed; <see cref="Exception.Message"/> is the job's error.</summary>
public sealed class GenerationFailedException(JobView job) : Exception(job.Error ?? "the generation failed")
{
    public JobView Job { get; } = job;
}

/// <summary>
/// Generation through the job queue, for every front end: a request is checked (<see cref="GenerationService.PrepareAsync"/>)
/// and queued as a <see cref="JobKind.Generation"/> job, so it shares the devices with training and everything else.
/// </summary>
public sealed class GenerationJobs(JobService jobs, GenerationService generation)
{
    /// <summary>Checks and queues a generation for <paramref name="caller"/>; <paramref name="initImage"/> is an image file's bytes (img2img).</summary>
    public async Task<JobView> SubmitAsync(Caller caller, GenerationJobRequest request, byte[]? initImage, CancellationToken cancellationToken, int priority = 0)
    {
        var prepared = await generation.PrepareAsync(caller, request, initImage, cancellationToken);
        return await jobs.SubmitAsync(new JobSubmission(JobKind.Generation, caller.UserId, prepared.ToJson(), priority), cancellationToken);
    }

    /// <summary>
    /// Queues a generation and waits for its images (a synchronous API call); when <paramref name="cancellationToken"/>
    /// ends first (the client went away), the job is cancelled too.
    /// </summary>
    /// <returns>The images, or null when the job was cancelled meanwhile (an interrupt, an admin).</returns>
    /// <exception cref="GenerationFailedException">when the job failed.</exception>
    public async Task<GenerationJobResult?> RunAsync(Caller caller, GenerationJobRequest request, byte[]? initImage, CancellationToken cancellationToken)
    {
        var job = await SubmitAsync(caller, request, initImage, cancellationToken);
        JobView done;
        try
        {
            done = await jobs.WaitAsync(job.Id, cancellationToken);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            await jobs.CancelAsync(caller, job.Id, CancellationToken.None);
            throw;
        }
        if (done.State == JobState.Cancelled) return null;
        if (done.State != JobState.Completed || done.Result is not { } result) throw new GenerationFailedException(done);
        return GenerationJobResult.FromJson(result);
    }

    /// <summary>Stops the caller's running generations (A1111's interrupt); queued ones stay queued. Returns how many were stopped.</summary>
    public async Task<int> InterruptAsync(Caller caller, CancellationToken cancellationToken)
    {
        var stopped = 0;
        foreach (var job in await RunningAsync(caller, cancellationToken))
            if (await jobs.CancelAsync(caller, job.Id, cancellationToken)) stopped++;
        return stopped;
    }

    /// <summary>The caller's own generation jobs that are running (an admin's too: only their own, as A1111's progress is per client).</summary>
    public async Task<IReadOnlyList<JobView>> RunningAsync(Caller caller, CancellationToken cancellationToken) =>
        [.. (await jobs.ListAsync(caller, JobState.Running, cancellationToken)).Where(j => j.Kind == JobKind.Generation && j.OwnerId == caller.UserId)];

    /// <summary>The caller's own generation jobs that wait in the queue.</summary>
    public async Task<IReadOnlyList<JobView>> QueuedAsync(Caller caller, CancellationToken cancellationToken) =>
        [.. (await jobs.ListAsync(caller, JobState.Queued, cancellationToken)).Where(j => j.Kind == JobKind.Generation && j.OwnerId == caller.UserId)];
}
