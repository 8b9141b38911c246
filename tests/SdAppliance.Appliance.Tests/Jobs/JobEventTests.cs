using SdAppliance.Appliance.Jobs;

namespace SdAppliance.Appliance.Tests.Jobs;

public sealed class JobEventTests : IDisposable
{
    private readonly string data = Directory.CreateTempSubdirectory("sdapp-events-").FullName;

    [Fact]
    public async Task A_subscriber_gets_the_history_then_live_events_in_order_until_the_job_ends_and_after_a_restart_from_the_file()
    {
        var runner = new ControlledRunner(JobKind.Generation, usesDevice: true);
        Guid id;
        List<JobEvent> seen;
        await using (var appliance = await TestAppliance.StartAsync(data, [runner]))
        {
            id = (await appliance.SubmitAsync(JobKind.Generation, "alice", new { })).Id;
            await runner.WaitStartedAsync(id);
            using var timeout = new CancellationTokenSource(TestAppliance.Patience);
            seen = [];
            await foreach (var e in appliance.Jobs.EventsAsync(id, 0, timeout.Token))
            {
                seen.Add(e);
                // The history has come (up to the runner's log line); what follows comes live.
                if (e.Type == JobEventTypes.Log) runner.Complete(id);
            }
            Assert.Equal(JobState.Completed, (await appliance.WaitAsync(id)).State);
        }

        Assert.Equal(Enumerable.Range(1, seen.Count).Select(i => (long)i), seen.Select(e => e.Sequence));
        Assert.Equal(
            [(JobEventTypes.State, JobState.Queued), (JobEventTypes.State, JobState.Running), (JobEventTypes.Log, null), (JobEventTypes.State, JobState.Completed)],
            seen.Select(e => (e.Type, e.State)));
        Assert.Equal("started on cpu", seen[2].Message);

        await using var restarted = await TestAppliance.StartAsync(data, [runner]);
        using var bound = new CancellationTokenSource(TestAppliance.Patience);
        Assert.Equal(seen, await Collect(restarted.Jobs.EventsAsync(id, 0, bound.Token)));
        Assert.Equal(seen.Skip(2), await Collect(restarted.Jobs.EventsAsync(id, 2, bound.Token)));
    }

    [Fact]
    public void A_torn_last_line_is_skipped_and_the_next_event_follows_on_its_own_line()
    {
        var log = new JobEventLog();
        var id = Guid.NewGuid();
        var stream = log.Of(id, data);
        log.Append(stream, new JobEvent(0, default, JobEventTypes.Log) { Message = "one" });
        File.AppendAllText(stream.File, "{\"sequence\":2,\"time_utc\":\"20");  // a kill in the middle of a write

        var reopened = new JobEventLog().Of(id, data);
        Assert.Equal(["one"], JobEventLog.Read(reopened.File).Select(e => e.Message));
        var next = new JobEventLog();
        var appended = next.Append(next.Of(id, data), new JobEvent(0, default, JobEventTypes.Log) { Message = "two", Loss = double.NaN });
        Assert.Equal(2, appended.Sequence);
        var read = JobEventLog.Read(stream.File).ToList();
        Assert.Equal([(1L, "one"), (2L, "two")], read.Select(e => (e.Sequence, e.Message!)));
        Assert.True(double.IsNaN(read[1].Loss!.Value));
    }

    private static async Task<List<JobEvent>> Collect(IAsyncEnumerable<JobEvent> events)
    {
        var list = new List<JobEvent>();
        await foreach (var e in events) list.Add(e);
        return list;
    }

    public void Dispose() => Directory.Delete(data, recursive: true);
}
