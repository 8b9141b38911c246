using System.Collections.Concurrent;
using System.Text.Json;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using SdAppliance.Appliance.Persistence;
using SdAppliance.Formats;
using SdAppliance.Torch;

namespace SdAppliance.Appliance.Jobs;

/// <summary>
/// Runs the queue: one GPU-heavy job per device at a time (N devices, N jobs; a data-parallel training run holds one
/// device per rank), light jobs beside them; the next job is
/// the highest priority, then the owner with the fewest running and the longest since their last start (round-robin
/// between users), then the oldest. A training run lends its device at each step boundary to the device jobs that
/// wait (a generation runs, the run continues). At start, what a stopped process left running is queued again.
/// </summary>
public sealed class JobScheduler : IHostedService, IAsyncDisposable
{
    private readonly JobService jobs;
    private readonly ILogger<JobScheduler> logger;
    private readonly Dictionary<JobKind, IJobRunner> runners;
    private readonly List<DeviceSlot> slots;
    private readonly SemaphoreSlim scheduling = new(1, 1);
    private readonly ConcurrentDictionary<Guid, Task> active = new();
    private readonly CancellationTokenSource stopping = new();
    private Task? loop;
    private DateTime lastStart = DateTime.MinValue;

    public JobScheduler(JobService jobs, IEnumerable<IJobRunner> runners, ApplianceOptions options, ILogger<JobScheduler> logger)
    {
        this.jobs = jobs;
        this.logger = logger;
        // The last registered runner of a kind wins, as with any service: a host replaces one by registering its own.
        this.runners = [];
        foreach (var runner in runners) this.runners[runner.Kind] = runner;
        slots = [.. DevicesOf(options).Select(d => new DeviceSlot(d))];
    }

    /// <summary>The devices jobs run on: the configured ones, else every CUDA device, else the CPU.</summary>
    public IReadOnlyList<string> Devices => [.. slots.Select(s => s.Name)];

    internal static IReadOnlyList<string> DevicesOf(ApplianceOptions options) =>
        options.Devices.Count > 0 ? options.Devices
        : Cuda.IsAvailable && Cuda.DeviceCount > 0 ? [.. Enumerable.Range(0, Cuda.DeviceCount).Select(i => $"cuda:{i}")]
        : ["cpu"];

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        // The database is migrated by then: DatabaseMigration.AtStart is the first hosted service.
        var requeued = await jobs.RequeueInterruptedAsync(cancellationToken);
        if (requeued > 0) logger.LogInformation("{Count} interrupted jobs queued again", requeued);
        loop = Task.Run(() => LoopAsync(stopping.Token), CancellationToken.None);
    }

    /// <summary>Stops taking jobs and interrupts the running ones; they stay running in the database and continue at the next start.</summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (!stopping.IsCancellationRequested) await stopping.CancelAsync();
        var all = active.Values.ToList();
        if (loop is not null) all.Add(loop);
        await Task.WhenAll(all).WaitAsync(cancellationToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(CancellationToken.None);
        stopping.Dispose();
        scheduling.Dispose();
    }

    private static readonly TimeSpan DispatchRetryDelay = TimeSpan.FromSeconds(1);

    private async Task LoopAsync(CancellationToken stop)
    {
        try
        {
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    await DispatchAsync(stop);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    // The database may be busy or the disk full for a moment. The change that woke us may be the last one
                    // for a long time (the job that just ended freed the only device), so look again shortly, not only at
                    // the next change: waiting for one left queued jobs unstarted behind a free device.
                    logger.LogError(e, "the job queue could not be dispatched; trying again in {Delay}", DispatchRetryDelay);
                    await Task.Delay(DispatchRetryDelay, stop);
                    continue;
                }
                await jobs.Wakeups.ReadAsync(stop);
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
        }
    }

    /// <summary>Starts every queued job that can start now, in the queue's order.</summary>
    private async Task DispatchAsync(CancellationToken stop)
    {
        await scheduling.WaitAsync(stop);
        try
        {
            var queued = await jobs.QueuedAsync(stop);
            if (queued.Count == 0) return;
            var load = await jobs.OwnerLoadAsync(stop);
            while (NextToStart(queued, load) is { } job)
            {
                queued.Remove(job);
                if (!runners.TryGetValue(job.Kind, out var runner))
                {
                    await FailUnstartedAsync(job, $"no runner for {job.Kind} jobs is installed in this appliance");
                    continue;
                }
                var wanted = Wanted(runner, job);
                if (wanted > slots.Count)
                {
                    await FailUnstartedAsync(job, $"num_processes: the job asks for {wanted} devices and this appliance has {slots.Count} ({string.Join(", ", Devices)}); ask for at most {slots.Count}");
                    continue;
                }
                await StartAsync(job, runner, [.. slots.Where(s => s.Holder is null).Take(wanted)], guestOf: null, load, stop);
            }
        }
        finally
        {
            scheduling.Release();
        }
    }

    /// <summary>
    /// The first job in the queue's order that can start now. A run that waits for several devices keeps those that free
    /// up meanwhile: device jobs behind it wait too (light jobs do not), so that a stream of one-device jobs cannot keep
    /// it waiting for ever. A job that wants more devices than there are starts, to fail at once saying so.
    /// </summary>
    private Job? NextToStart(List<Job> queued, Dictionary<string, (int Running, DateTime LastStarted)> load)
    {
        var free = slots.Count(s => s.Holder is null);
        var reserved = false;
        foreach (var job in JobService.InQueueOrder(queued, load))
        {
            if (!runners.TryGetValue(job.Kind, out var runner)) return job;
            var wanted = Wanted(runner, job);
            if (wanted == 0 || wanted > slots.Count) return job;
            if (!reserved && free >= wanted) return job;
            reserved |= wanted > 1;
        }
        return null;
    }

    private static int Wanted(IJobRunner runner, Job job)
    {
        if (!runner.UsesDevice) return 0;
        using var request = JsonDocument.Parse(job.RequestJson);
        return runner.DevicesWanted(request.RootElement);
    }

    /// <summary>The queue's next job among those <paramref name="eligible"/>: priority, then the least served owner, then age.</summary>
    private static Job? Next(List<Job> queued, Dictionary<string, (int Running, DateTime LastStarted)> load, Func<Job, bool> eligible) =>
        JobService.InQueueOrder(queued.Where(eligible), load).FirstOrDefault();

    /// <param name="held">The devices the job holds (none for a light job or a guest); a job of several gets their names comma-separated.</param>
    private async Task StartAsync(Job job, IJobRunner runner, IReadOnlyList<DeviceSlot> held, DeviceSlot? guestOf, Dictionary<string, (int Running, DateTime LastStarted)> load, CancellationToken stop)
    {
        var device = held.Count > 0 ? string.Join(",", held.Select(s => s.Name)) : guestOf?.Name ?? slots[0].Name;
        // Strictly increasing start times: the round-robin order between owners reads them.
        var now = DateTime.UtcNow;
        lastStart = now > lastStart ? now : lastStart.AddTicks(1);
        var cancellation = CancellationTokenSource.CreateLinkedTokenSource(stop);
        var started = await jobs.StartAsync(job.Id, device, lastStart, cancellation, stop);
        if (started is null)
        {
            cancellation.Dispose();
            return;
        }
        var (running, _) = load.GetValueOrDefault(job.OwnerId);
        load[job.OwnerId] = (running + 1, lastStart);
        foreach (var slot in held) slot.Holder = started;
        // Recorded before it starts, so that its own end finds it there to remove.
        var start = new Task<Task>(() => RunAsync(started, runner, held, guestOf, cancellation, stop));
        if (guestOf is not null) guestOf.Guest = start.Unwrap();
        else active[job.Id] = start.Unwrap();
        start.Start(TaskScheduler.Default);
    }

    private async Task RunAsync(Job job, IJobRunner runner, IReadOnlyList<DeviceSlot> held, DeviceSlot? guestOf, CancellationTokenSource cancellation, CancellationToken stop)
    {
        try
        {
            // A run on several devices runs in processes of its own, which cannot take a guest between their steps.
            var (state, result, error) = await OutcomeAsync(job, runner, held.Count == 1 ? held[0] : null, cancellation, stop);
            if (state is { } final) await jobs.FinishAsync(job.Id, final, result, error);
            else jobs.Abandon(job.Id);
        }
        catch (Exception e)
        {
            // Recording the end failed (the database): the job stays running there and is queued again at the next start.
            logger.LogError(e, "the end of {Kind} job {Id} could not be recorded", job.Kind, job.Id);
        }
        finally
        {
            cancellation.Dispose();
            foreach (var slot in held) slot.Holder = null;
            if (guestOf is not null) guestOf.Guest = null;
            else active.TryRemove(job.Id, out _);
            jobs.Wake();
        }
    }

    /// <summary>Runs the job; its final state (null: the appliance stops, it continues at the next start), result and error.</summary>
    private async Task<(JobState? State, JsonElement? Result, string? Error)> OutcomeAsync(
        Job job, IJobRunner runner, DeviceSlot? slot, CancellationTokenSource cancellation, CancellationToken stop)
    {
        try
        {
            var folder = jobs.FullFolder(job);
            Directory.CreateDirectory(folder);
            var context = new JobContext
            {
                Job = (await jobs.GetAsync(new Caller(job.OwnerId, IsAdmin: true), job.Id, CancellationToken.None))!,
                Folder = folder,
                Device = job.Device!,
                Resuming = job.Resuming,
                Publish = e => jobs.Publish(job, e),
                // Only the device's holder lends it; a guest, or a light job, has no device to lend.
                StepBoundary = slot is not null ? ct => LendAsync(slot, ct) : _ => Task.CompletedTask,
                Control = job.Kind == JobKind.Training ? jobs.ControlOf(job.Id) : null,
            };
            return (JobState.Completed, await runner.RunAsync(context, cancellation.Token), null);
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            return (null, null, null);
        }
        catch (OperationCanceledException) when (cancellation.IsCancellationRequested)
        {
            return (JobState.Cancelled, null, null);
        }
        catch (Exception e)
        {
            if (e is not UserInputException) logger.LogError(e, "{Kind} job {Id} failed", job.Kind, job.Id);
            return (JobState.Failed, null, e.Message);
        }
    }

    /// <summary>
    /// A training run's step boundary: the device jobs that wait (not training) run now on its device, one after the
    /// other, and this returns when none waits.
    /// </summary>
    private async Task LendAsync(DeviceSlot slot, CancellationToken cancellationToken)
    {
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Task? guest = null;
            await scheduling.WaitAsync(cancellationToken);
            try
            {
                if (stopping.IsCancellationRequested) return;
                // At every step of a run: the owners' load is read only when a job waits for the device.
                var waiting = (await jobs.QueuedAsync(cancellationToken))
                    .Where(j => j.Kind != JobKind.Training && runners.TryGetValue(j.Kind, out var r) && r.UsesDevice).ToList();
                if (waiting.Count == 0) return;
                var load = await jobs.OwnerLoadAsync(cancellationToken);
                var job = Next(waiting, load, _ => true)!;
                await StartAsync(job, runners[job.Kind], held: [], guestOf: slot, load, stopping.Token);
                guest = slot.Guest;
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // Lending is a courtesy: a queue that cannot be read (a busy database) must not fail the run.
                logger.LogError(e, "the device {Device} could not be lent at a step boundary", slot.Name);
                return;
            }
            finally
            {
                scheduling.Release();
            }
            // The guest finishes before the run continues, cancelled or not: the device is the run's again only then.
            if (guest is not null) await guest.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
    }

    private async Task FailUnstartedAsync(Job job, string error)
    {
        using var none = new CancellationTokenSource();
        if (await jobs.StartAsync(job.Id, slots[0].Name, DateTime.UtcNow, none, CancellationToken.None) is not null)
            await jobs.FinishAsync(job.Id, JobState.Failed, null, error);
    }

    /// <summary>A device and the GPU-heavy job holding it (and the one it lends the device to at a step boundary).</summary>
    private sealed class DeviceSlot(string name)
    {
        public string Name { get; } = name;
        public Job? Holder { get; set; }
        public Task? Guest { get; set; }
    }
}
