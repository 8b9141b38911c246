namespace SdAppliance.Appliance.Jobs;

/// <summary>Who is asking: a user id and whether they are an admin (an admin sees every job; a user their own).</summary>
public sealed record Caller(string UserId, bool IsAdmin);

/// <summary>The job queue as the API, the UI and the CLI use it.</summary>
public sealed class JobService
{
    public Task<JobView> SubmitAsync(JobSubmission submission, CancellationToken cancellationToken) => throw new NotImplementedException();

    /// <summary>The job, or null when it does not exist or the caller may not see it.</summary>
    public Task<JobView?> GetAsync(Caller caller, Guid id, CancellationToken cancellationToken) => throw new NotImplementedException();

    /// <summary>The caller's jobs (an admin's: all), newest first.</summary>
    public Task<IReadOnlyList<JobView>> ListAsync(Caller caller, JobState? state, CancellationToken cancellationToken) => throw new NotImplementedException();

    /// <summary>Cancels a queued or running job; false when there is none the caller may cancel.</summary>
    public Task<bool> CancelAsync(Caller caller, Guid id, CancellationToken cancellationToken) => throw new NotImplementedException();

    /// <summary>Queues a failed or cancelled training job again, to continue from its last saved state.</summary>
    public Task<JobView?> ResumeAsync(Caller caller, Guid id, CancellationToken cancellationToken) => throw new NotImplementedException();

    /// <summary>The job's events after <paramref name="afterSequence"/> (its history first), then live ones until it ends.</summary>
    public IAsyncEnumerable<JobEvent> EventsAsync(Guid id, long afterSequence, CancellationToken cancellationToken) => throw new NotImplementedException();

    /// <summary>Waits until the job ends and returns it.</summary>
    public Task<JobView> WaitAsync(Guid id, CancellationToken cancellationToken) => throw new NotImplementedException();
}
