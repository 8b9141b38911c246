using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using SdAppliance.Appliance.Persistence;
using SdAppliance.Formats;
using SdAppliance.Training.Runs;

namespace SdAppliance.Appliance.Jobs;

/// <summary>Who is asking: a user id and whether they are an admin (an admin sees every job; a user their own).</summary>
public sealed record Caller(string UserId, bool IsAdmin);

/// <summary>The job queue as the API, the UI and the CLI use it; <see cref="JobScheduler"/> runs what it queues.</summary>
public sealed class JobService(IDbContextFactory<ApplianceDb> databases, ApplianceOptions options, IServiceProvider services)
{
    private readonly JobEventLog events = new();
    private readonly ConcurrentDictionary<Guid, CancellationTokenSource> running = new();
    private readonly ConcurrentDictionary<Guid, TaskCompletionSource> endings = new();
    private readonly SemaphoreSlim reordering = new(1, 1);
    private readonly ConcurrentDictionary<Guid, RunControl> controls = new();
    private readonly Channel<bool> wakeups = Channel.CreateBounded<bool>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite });

    public async Task<JobView> SubmitAsync(JobSubmission submission, CancellationToken cancellationToken)
    {
        if (string.IsNullOrWhiteSpace(submission.OwnerId))
            throw new UserInputException("owner", "a job needs the user who submits it");
        if (submission.Request.ValueKind != JsonValueKind.Object)
            throw new UserInputException("request", $"must be a JSON object (got {submission.Request.ValueKind})", "send the job's settings as {\"field\": value, ...}");
        // Asked for here, not injected: a runner may itself use the job service.
        services.GetServices<IJobRunner>().LastOrDefault(r => r.Kind == submission.Kind)?.Check(submission.Request);
        var id = Guid.NewGuid();
        var job = new Job
        {
            Id = id, Kind = submission.Kind, State = JobState.Queued, Priority = submission.Priority, OwnerId = submission.OwnerId,
            CreatedUtc = DateTime.UtcNow, RequestJson = submission.Request.GetRawText(), Folder = FolderOf(submission.Kind, id),
        };
        Directory.CreateDirectory(FullFolder(job));
        await using (var db = await databases.CreateDbContextAsync(cancellationToken))
        {
            db.Jobs.Add(job);
            await db.SaveChangesAsync(cancellationToken);
        }
        Publish(job, new JobEvent(0, default, JobEventTypes.State) { State = JobState.Queued });
        Wake();
        return View(job);
    }

    /// <summary>The job, or null when it does not exist or the caller may not see it.</summary>
    public async Task<JobView?> GetAsync(Caller caller, Guid id, CancellationToken cancellationToken)
    {
        var job = await FindAsync(id, cancellationToken);
        return job is not null && MaySee(caller, job) ? View(job) : null;
    }

    /// <summary>The caller's jobs (an admin's: all), newest first.</summary>
    public async Task<IReadOnlyList<JobView>> ListAsync(Caller caller, JobState? state, CancellationToken cancellationToken)
    {
        await using var db = await databases.CreateDbContextAsync(cancellationToken);
        var query = db.Jobs.AsNoTracking();
        if (!caller.IsAdmin) query = query.Where(j => j.OwnerId == caller.UserId);
        if (state is { } s) query = query.Where(j => j.State == s);
        var jobs = await query.OrderByDescending(j => j.CreatedUtc).ToListAsync(cancellationToken);
        return [.. jobs.Select(View)];
    }

    /// <summary>
    /// The queued jobs in the order the scheduler will take them (<see cref="StartOrder"/>; a job that waits for a device
    /// may be passed by a light one); a user sees their own among them, an admin all.
    /// </summary>
    public async Task<IReadOnlyList<JobView>> QueueAsync(Caller caller, CancellationToken cancellationToken)
    {
        var ordered = StartOrder(await QueuedAsync(cancellationToken), await OwnerLoadAsync(cancellationToken));
        return [.. ordered.Where(j => MaySee(caller, j)).Select(View)];
    }

    /// <summary>
    /// An admin moves a queued job <paramref name="by"/> places in the queue (negative: earlier). The queue's order as
    /// <see cref="QueueAsync"/> shows it, with the move, becomes its order for good: every queued job gets a priority
    /// one above the next's, from the lowest priority among them up. False when the job is not queued (it started or
    /// ended meanwhile); a move past either end stops there.
    /// </summary>
    public async Task<bool> MoveAsync(Caller caller, Guid id, int by, CancellationToken cancellationToken)
    {
        if (!caller.IsAdmin) throw new NotPermittedException("queue", "only an admin may reorder the queue");
        await reordering.WaitAsync(cancellationToken);
        try
        {
            var ordered = StartOrder(await QueuedAsync(cancellationToken), await OwnerLoadAsync(cancellationToken));
            var from = ordered.FindIndex(j => j.Id == id);
            if (from < 0) return false;
            var to = Math.Clamp(from + by, 0, ordered.Count - 1);
            var moved = ordered[from];
            ordered.RemoveAt(from);
            ordered.Insert(to, moved);
            var lowest = ordered.Min(j => j.Priority);
            var priorities = ordered.Select((j, i) => (j.Id, Priority: lowest + ordered.Count - 1 - i)).ToDictionary(p => p.Id, p => p.Priority);
            await using (var db = await databases.CreateDbContextAsync(cancellationToken))
            {
                var rows = await db.Jobs.Where(j => priorities.Keys.Contains(j.Id) && j.State == JobState.Queued).ToListAsync(cancellationToken);
                foreach (var row in rows) row.Priority = priorities[row.Id];
                await db.SaveChangesAsync(cancellationToken);
            }
            Wake();
            return true;
        }
        finally
        {
            reordering.Release();
        }
    }

    /// <summary>Cancels a queued or running job; false when there is none the caller may cancel.</summary>
    public async Task<bool> CancelAsync(Caller caller, Guid id, CancellationToken cancellationToken)
    {
        var job = await FindAsync(id, cancellationToken);
        if (job is null || !MaySee(caller, job)) return false;
        var cancelled = false;
        await TransitionAsync(id, j =>
        {
            if (j.State == JobState.Running && running.TryGetValue(id, out var runner))
            {
                // The runner stops at its next check; the scheduler records it as cancelled.
                runner.Cancel();
                cancelled = true;
                return null;
            }
            if (j.State is not (JobState.Queued or JobState.Running)) return null;
            // Queued, or running in no live scheduler (a stopped process): nothing runs it, it ends here.
            cancelled = true;
            j.State = JobState.Cancelled;
            j.FinishedUtc = DateTime.UtcNow;
            return new JobEvent(0, default, JobEventTypes.State) { State = JobState.Cancelled, Message = "cancelled" };
        }, cancellationToken);
        return cancelled;
    }

    /// <summary>Queues a failed or cancelled training job again, to continue from its last saved state.</summary>
    public async Task<JobView?> ResumeAsync(Caller caller, Guid id, CancellationToken cancellationToken)
    {
        var job = await FindAsync(id, cancellationToken);
        if (job is null || !MaySee(caller, job) || job.Kind != JobKind.Training) return null;
        var resumed = await TransitionAsync(id, j =>
        {
            if (j.State is not (JobState.Failed or JobState.Cancelled)) return null;
            j.State = JobState.Queued;
            j.Resuming = true;
            j.Error = null;
            j.FinishedUtc = null;
            return new JobEvent(0, default, JobEventTypes.State) { State = JobState.Queued, Message = "resumed: continues from its last saved state" };
        }, cancellationToken);
        if (resumed is null) return null;
        Wake();
        return View(resumed);
    }

    /// <summary>
    /// Asks a queued or running training job to draw its samples or to save (a training state and the results so far) at
    /// its next step boundary, where the trainer takes it and reports it in the log; false when there is no such job the
    /// caller may see. A request made before the first step is taken at it.
    /// </summary>
    public async Task<bool> RequestAsync(Caller caller, Guid id, RunRequest request, CancellationToken cancellationToken)
    {
        var job = await FindAsync(id, cancellationToken);
        if (job is null || !MaySee(caller, job) || job.Kind != JobKind.Training || job.State is not (JobState.Queued or JobState.Running)) return false;
        var control = ControlOf(id);
        if (request == RunRequest.Sample) control.RequestSample();
        else control.RequestSave();
        Publish(job, new JobEvent(0, default, JobEventTypes.Log)
        {
            Message = request == RunRequest.Sample ? "sample requested: drawn at the next step" : "save requested: saved at the next step",
        });
        return true;
    }

    /// <summary>The job's events after <paramref name="afterSequence"/> (its history first), then live ones until it ends.</summary>
    public async IAsyncEnumerable<JobEvent> EventsAsync(Guid id, long afterSequence, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var job = await FindAsync(id, cancellationToken);
        if (job is null) yield break;
        var stream = events.Of(id, FullFolder(job));
        Channel<JobEvent> live;
        long replayTo;
        bool ended;
        // Under the job's lock: a state change either happened before (its event is in the file) or comes live.
        await stream.Lock.WaitAsync(cancellationToken);
        try
        {
            (live, replayTo) = events.Subscribe(stream);
            ended = JobStates.IsFinal((await FindAsync(id, cancellationToken))!.State);
        }
        finally
        {
            stream.Lock.Release();
        }
        try
        {
            var last = afterSequence;
            foreach (var e in JobEventLog.Read(stream.File))
            {
                if (e.Sequence <= last || e.Sequence > replayTo) continue;
                last = e.Sequence;
                yield return e;
            }
            if (ended) yield break;
            await foreach (var e in live.Reader.ReadAllAsync(cancellationToken))
            {
                if (e.Sequence <= last) continue;
                last = e.Sequence;
                yield return e;
            }
        }
        finally
        {
            events.Unsubscribe(stream, live);
        }
    }

    /// <summary>Waits until the job ends and returns it.</summary>
    public async Task<JobView> WaitAsync(Guid id, CancellationToken cancellationToken)
    {
        while (true)
        {
            var ending = endings.GetOrAdd(id, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
            var job = await FindAsync(id, cancellationToken) ?? throw new KeyNotFoundException($"job {id} does not exist");
            if (JobStates.IsFinal(job.State)) return View(job);
            await ending.Task.WaitAsync(cancellationToken);
        }
    }

    // ---- for the scheduler ----

    /// <summary>The requests to training job <paramref name="id"/> (<see cref="RequestAsync"/>), which its runner hands the trainer.</summary>
    internal RunControl ControlOf(Guid id) => controls.GetOrAdd(id, _ => new RunControl());

    internal ChannelReader<bool> Wakeups => wakeups.Reader;

    internal void Wake() => wakeups.Writer.TryWrite(true);

    internal string FullFolder(Job job) => Path.Combine(options.DataFolder, job.Folder);

    internal static string FolderOf(JobKind kind, Guid id) => Path.Combine(kind == JobKind.Training ? "runs" : "jobs", id.ToString());

    /// <summary>Publishes a runner's event for <paramref name="job"/> (its sequence and time are filled in).</summary>
    internal JobEvent Publish(Job job, JobEvent template) => events.Append(events.Of(job.Id, FullFolder(job)), template);

    internal async Task<List<Job>> QueuedAsync(CancellationToken cancellationToken)
    {
        await using var db = await databases.CreateDbContextAsync(cancellationToken);
        return await db.Jobs.AsNoTracking().Where(j => j.State == JobState.Queued).OrderBy(j => j.CreatedUtc).ToListAsync(cancellationToken);
    }

    /// <summary>
    /// The order queued jobs start in: the highest priority, then the owner with the fewest running and the longest
    /// since their last start (round-robin between users), then the oldest.
    /// </summary>
    internal static IEnumerable<Job> InQueueOrder(IEnumerable<Job> queued, Dictionary<string, (int Running, DateTime LastStarted)> load) =>
        queued.OrderByDescending(j => j.Priority)
            .ThenBy(j => load.GetValueOrDefault(j.OwnerId).Running)
            .ThenBy(j => load.TryGetValue(j.OwnerId, out var l) ? l.LastStarted : DateTime.MinValue)
            .ThenBy(j => j.CreatedUtc);

    /// <summary>
    /// The order <paramref name="queued"/> will start in, one after the other: <see cref="InQueueOrder"/> again after
    /// each start, as the scheduler does, since each start makes its owner the most recently served.
    /// </summary>
    internal static List<Job> StartOrder(IEnumerable<Job> queued, Dictionary<string, (int Running, DateTime LastStarted)> load)
    {
        var left = queued.ToList();
        var served = new Dictionary<string, (int Running, DateTime LastStarted)>(load, StringComparer.Ordinal);
        var clock = served.Values.Select(l => l.LastStarted).Append(DateTime.UtcNow).Max();
        var order = new List<Job>(left.Count);
        while (InQueueOrder(left, served).FirstOrDefault() is { } next)
        {
            left.Remove(next);
            order.Add(next);
            clock = clock.AddTicks(1);
            served[next.OwnerId] = (served.GetValueOrDefault(next.OwnerId).Running, clock);
        }
        return order;
    }

    /// <summary>How far back a start counts for the fair order: an owner who started nothing since goes first.</summary>
    private static readonly TimeSpan RecentStarts = TimeSpan.FromDays(1);

    /// <summary>Per owner with a job running or started recently: jobs running now and the last start, for the fair order.</summary>
    internal async Task<Dictionary<string, (int Running, DateTime LastStarted)>> OwnerLoadAsync(CancellationToken cancellationToken)
    {
        var since = DateTime.UtcNow - RecentStarts;
        await using var db = await databases.CreateDbContextAsync(cancellationToken);
        var rows = await db.Jobs.AsNoTracking().Where(j => j.StartedUtc != null && (j.State == JobState.Running || j.StartedUtc > since))
            .GroupBy(j => j.OwnerId)
            .Select(g => new { Owner = g.Key, Running = g.Count(j => j.State == JobState.Running), Last = g.Max(j => j.StartedUtc) })
            .ToListAsync(cancellationToken);
        return rows.ToDictionary(r => r.Owner, r => (r.Running, r.Last ?? DateTime.MinValue), StringComparer.Ordinal);
    }

    /// <summary>Queued → running on <paramref name="device"/>; null when it is no longer queued (cancelled meanwhile).</summary>
    internal Task<Job?> StartAsync(Guid id, string device, DateTime startedUtc, CancellationTokenSource cancellation, CancellationToken cancellationToken) =>
        TransitionAsync(id, j =>
        {
            if (j.State != JobState.Queued) return null;
            j.State = JobState.Running;
            j.StartedUtc = startedUtc;
            j.Device = device;
            j.Attempts++;
            running[id] = cancellation;
            return new JobEvent(0, default, JobEventTypes.State) { State = JobState.Running, Message = j.Resuming ? "resuming" : null };
        }, cancellationToken);

    /// <summary>Running → completed, failed or cancelled.</summary>
    internal async Task FinishAsync(Guid id, JobState state, JsonElement? result, string? error)
    {
        await TransitionAsync(id, j =>
        {
            running.TryRemove(id, out _);
            controls.TryRemove(id, out _);
            j.State = state;
            j.FinishedUtc = DateTime.UtcNow;
            j.ResultJson = result?.GetRawText();
            j.Error = error;
            j.Resuming = false;
            if (events.Of(id, FullFolder(j)).LastStep is { } step)
                (j.Step, j.TotalSteps) = (step.Step ?? j.Step, step.TotalSteps ?? j.TotalSteps);
            return new JobEvent(0, default, JobEventTypes.State) { State = state, Message = error };
        }, CancellationToken.None);
        if (endings.TryRemove(id, out var ending)) ending.TrySetResult();
    }

    /// <summary>A running job left to the next start (the scheduler stops): it stays running in the database.</summary>
    internal void Abandon(Guid id) => running.TryRemove(id, out _);

    /// <summary>At the scheduler's start: what a stopped process left running goes back to the queue, to continue from what it saved.</summary>
    internal async Task<int> RequeueInterruptedAsync(CancellationToken cancellationToken)
    {
        List<Guid> interrupted;
        await using (var db = await databases.CreateDbContextAsync(cancellationToken))
            interrupted = await db.Jobs.Where(j => j.State == JobState.Running).Select(j => j.Id).ToListAsync(cancellationToken);
        foreach (var id in interrupted)
            await TransitionAsync(id, j =>
            {
                if (j.State != JobState.Running) return null;
                j.State = JobState.Queued;
                j.Resuming = true;
                return new JobEvent(0, default, JobEventTypes.State)
                {
                    State = JobState.Queued,
                    Message = j.Kind == JobKind.Training ? "interrupted by a restart: continues from its last saved state" : "interrupted by a restart: queued again",
                };
            }, cancellationToken);
        return interrupted.Count;
    }

    /// <summary>
    /// Changes a job under its lock and publishes the event <paramref name="change"/> returns (null: nothing changed), so
    /// a subscriber sees every state change either in the history or live.
    /// </summary>
    private async Task<Job?> TransitionAsync(Guid id, Func<Job, JobEvent?> change, CancellationToken cancellationToken)
    {
        var job = await FindAsync(id, cancellationToken);
        if (job is null) return null;
        var stream = events.Of(id, FullFolder(job));
        await stream.Lock.WaitAsync(cancellationToken);
        try
        {
            await using var db = await databases.CreateDbContextAsync(cancellationToken);
            job = await db.Jobs.SingleAsync(j => j.Id == id, cancellationToken);
            var e = change(job);
            if (e is null) return null;
            await db.SaveChangesAsync(cancellationToken);
            events.Append(stream, e);
            return job;
        }
        finally
        {
            stream.Lock.Release();
        }
    }

    private async Task<Job?> FindAsync(Guid id, CancellationToken cancellationToken)
    {
        await using var db = await databases.CreateDbContextAsync(cancellationToken);
        return await db.Jobs.AsNoTracking().SingleOrDefaultAsync(j => j.Id == id, cancellationToken);
    }

    private static bool MaySee(Caller caller, Job job) => caller.IsAdmin || job.OwnerId == caller.UserId;

    private JobView View(Job job)
    {
        // A running job's progress is its last step event; the database has it once the job ends.
        var (step, total) = (job.Step, job.TotalSteps);
        if (job.State == JobState.Running && events.Of(job.Id, FullFolder(job)).LastStep is { } last)
            (step, total) = (last.Step ?? step, last.TotalSteps ?? total);
        using var request = JsonDocument.Parse(job.RequestJson);
        JsonElement? result = null;
        if (job.ResultJson is not null)
        {
            using var parsed = JsonDocument.Parse(job.ResultJson);
            result = parsed.RootElement.Clone();
        }
        return new JobView(job.Id, job.Kind, job.State, job.OwnerId, job.Priority, job.CreatedUtc, job.StartedUtc, job.FinishedUtc,
            step, total, job.Error, request.RootElement.Clone(), result)
        {
            Device = job.Device,
            Attempts = job.Attempts,
            Folder = job.Folder,
        };
    }
}
