using SdAppliance.Appliance.Jobs;

namespace SdAppliance.Appliance.Tests.Jobs;

public sealed class SchedulingTests : IDisposable
{
    private readonly string data = Directory.CreateTempSubdirectory("sdapp-scheduling-").FullName;

    [Fact]
    public async Task Higher_priority_goes_first_then_users_take_turns_then_first_come_first_served()
    {
        var runner = new ControlledRunner(JobKind.Generation, usesDevice: true);
        await using var appliance = await TestAppliance.StartAsync(data, [runner]);
        var blocker = await appliance.SubmitAsync(JobKind.Generation, "zoe", new { });
        await runner.WaitStartedAsync(blocker.Id);
        var a1 = await appliance.SubmitAsync(JobKind.Generation, "alice", new { n = "a1" });
        var a2 = await appliance.SubmitAsync(JobKind.Generation, "alice", new { n = "a2" });
        var a3 = await appliance.SubmitAsync(JobKind.Generation, "alice", new { n = "a3" });
        var b1 = await appliance.SubmitAsync(JobKind.Generation, "bob", new { n = "b1" });
        var b2 = await appliance.SubmitAsync(JobKind.Generation, "bob", new { n = "b2" });
        var urgent = await appliance.SubmitAsync(JobKind.Generation, "carol", new { n = "urgent" }, priority: 5);

        // One device: each job starts only when the one before has ended.
        var expected = new[] { urgent, a1, b1, a2, b2, a3 };
        runner.Complete(blocker.Id);
        foreach (var job in expected)
        {
            await runner.WaitStartedAsync(job.Id);
            runner.Complete(job.Id);
        }
        foreach (var job in expected) await appliance.WaitAsync(job.Id);
        Assert.Equal([blocker.Id, .. expected.Select(j => j.Id)], runner.StartOrder);
        Assert.Equal(1, runner.MostAtOnce);
    }

    [Fact]
    public async Task The_queue_lists_the_start_order_and_an_admins_moves_change_what_starts_next()
    {
        var runner = new ControlledRunner(JobKind.Generation, usesDevice: true);
        await using var appliance = await TestAppliance.StartAsync(data, [runner]);
        var none = CancellationToken.None;
        var admin = new Caller("root", IsAdmin: true);
        var blocker = await appliance.SubmitAsync(JobKind.Generation, "zoe", new { });
        await runner.WaitStartedAsync(blocker.Id);
        var a1 = await appliance.SubmitAsync(JobKind.Generation, "alice", new { n = "a1" });
        var a2 = await appliance.SubmitAsync(JobKind.Generation, "alice", new { n = "a2" });
        var b1 = await appliance.SubmitAsync(JobKind.Generation, "bob", new { n = "b1" });
        var urgent = await appliance.SubmitAsync(JobKind.Generation, "carol", new { n = "urgent" }, priority: 5);

        async Task<Guid[]> QueueOf(Caller caller) => [.. (await appliance.Jobs.QueueAsync(caller, none)).Select(j => j.Id)];
        Assert.Equal([urgent.Id, a1.Id, b1.Id, a2.Id], await QueueOf(admin));
        Assert.Equal([a1.Id, a2.Id], await QueueOf(new Caller("alice", IsAdmin: false)));

        // a2 two places up (before b1 and a1); the urgent one past the start (it stays first), then one down.
        Assert.True(await appliance.Jobs.MoveAsync(admin, a2.Id, -2, none));
        Assert.Equal([urgent.Id, a2.Id, a1.Id, b1.Id], await QueueOf(admin));
        Assert.True(await appliance.Jobs.MoveAsync(admin, urgent.Id, -1, none));
        Assert.True(await appliance.Jobs.MoveAsync(admin, urgent.Id, +1, none));
        Assert.Equal([a2.Id, urgent.Id, a1.Id, b1.Id], await QueueOf(admin));

        // Users may not reorder; a job that is not queued cannot move.
        await Assert.ThrowsAsync<NotPermittedException>(() => appliance.Jobs.MoveAsync(new Caller("alice", IsAdmin: false), a1.Id, -1, none));
        Assert.False(await appliance.Jobs.MoveAsync(admin, blocker.Id, -1, none));

        // The scheduler starts them in the order the queue showed.
        Guid[] expected = [a2.Id, urgent.Id, a1.Id, b1.Id];
        runner.Complete(blocker.Id);
        foreach (var id in expected)
        {
            await runner.WaitStartedAsync(id);
            runner.Complete(id);
        }
        foreach (var id in expected) await appliance.WaitAsync(id);
        Assert.Equal([blocker.Id, .. expected], runner.StartOrder);
    }

    [Fact]
    public async Task Two_devices_run_two_device_jobs_at_once_never_two_on_one_and_light_jobs_run_beside()
    {
        var heavy = new ControlledRunner(JobKind.Generation, usesDevice: true);
        var light = new ControlledRunner(JobKind.Conversion, usesDevice: false);
        await using var appliance = await TestAppliance.StartAsync(data, [heavy, light], devices: ["cuda:0", "cuda:1"]);
        var first = await appliance.SubmitAsync(JobKind.Generation, "alice", new { });
        var second = await appliance.SubmitAsync(JobKind.Generation, "alice", new { });
        var third = await appliance.SubmitAsync(JobKind.Generation, "alice", new { });
        var conversion = await appliance.SubmitAsync(JobKind.Conversion, "alice", new { });

        await heavy.WaitStartedAsync(first.Id);
        await heavy.WaitStartedAsync(second.Id);
        await light.WaitStartedAsync(conversion.Id);
        // The conversion, queued after the third, started: the scheduler looked at the third and kept it waiting.
        var caller = new Caller("alice", IsAdmin: false);
        List<JobView> running = [(await appliance.Jobs.GetAsync(caller, first.Id, CancellationToken.None))!, (await appliance.Jobs.GetAsync(caller, second.Id, CancellationToken.None))!];
        Assert.Equal(["cuda:0", "cuda:1"], running.Select(j => j.Device!).Order(StringComparer.Ordinal));
        Assert.Equal(JobState.Queued, (await appliance.Jobs.GetAsync(caller, third.Id, CancellationToken.None))!.State);

        heavy.Complete(second.Id);
        await heavy.WaitStartedAsync(third.Id);
        Assert.Equal(running[1].Device, (await appliance.Jobs.GetAsync(caller, third.Id, CancellationToken.None))!.Device);
        heavy.Complete(first.Id);
        heavy.Complete(third.Id);
        light.Complete(conversion.Id);
        foreach (var job in new[] { first, second, third, conversion }) Assert.Equal(JobState.Completed, (await appliance.WaitAsync(job.Id)).State);
        Assert.Equal(2, heavy.MostAtOnce);
    }

    [Fact]
    public async Task A_run_of_two_ranks_holds_two_devices_and_waits_until_both_are_free()
    {
        var heavy = new ControlledRunner(JobKind.Training, usesDevice: true);
        var light = new ControlledRunner(JobKind.Conversion, usesDevice: false);
        await using var appliance = await TestAppliance.StartAsync(data, [heavy, light], devices: ["cuda:0", "cuda:1"]);
        var caller = new Caller("alice", IsAdmin: false);
        async Task<JobView> Get(Guid id) => (await appliance.Jobs.GetAsync(caller, id, CancellationToken.None))!;

        var single = await appliance.SubmitAsync(JobKind.Training, "alice", new { });
        await heavy.WaitStartedAsync(single.Id);
        var pair = await appliance.SubmitAsync(JobKind.Training, "alice", new { num_processes = 2 });
        var tooMany = await appliance.SubmitAsync(JobKind.Training, "alice", new { num_processes = 3 });
        // More devices than the appliance has: refused at once, saying how many there are.
        var refused = await appliance.WaitAsync(tooMany.Id);
        Assert.Equal(JobState.Failed, refused.State);
        Assert.Equal("num_processes: the job asks for 3 devices and this appliance has 2 (cuda:0, cuda:1); ask for at most 2", refused.Error);
        // One device is free, which is not enough: the pair waits, and keeps the free device from a one-device job
        // queued behind it (or a stream of those would keep it waiting for ever); a light job still starts.
        var behind = await appliance.SubmitAsync(JobKind.Training, "alice", new { });
        var conversion = await appliance.SubmitAsync(JobKind.Conversion, "alice", new { });
        await light.WaitStartedAsync(conversion.Id);
        Assert.Equal(JobState.Queued, (await Get(pair.Id)).State);
        Assert.Equal(JobState.Queued, (await Get(behind.Id)).State);

        heavy.Complete(single.Id);
        await heavy.WaitStartedAsync(pair.Id);
        Assert.Equal("cuda:0,cuda:1", (await Get(pair.Id)).Device);
        // While it holds both, a one-device job waits.
        var after = await appliance.SubmitAsync(JobKind.Training, "alice", new { });
        Assert.Equal(JobState.Queued, (await Get(after.Id)).State);
        heavy.Complete(pair.Id);
        await heavy.WaitStartedAsync(behind.Id);
        await heavy.WaitStartedAsync(after.Id);
        heavy.Complete(behind.Id);
        heavy.Complete(after.Id);
        light.Complete(conversion.Id);
        foreach (var job in new[] { behind, after, conversion }) Assert.Equal(JobState.Completed, (await appliance.WaitAsync(job.Id)).State);
    }

    [Fact]
    public async Task Fifty_jobs_submitted_at_once_by_several_users_all_run_exactly_once()
    {
        var runner = new ControlledRunner(JobKind.Generation, usesDevice: true, completeAtOnce: true);
        await using var appliance = await TestAppliance.StartAsync(data, [runner], devices: ["cpu", "cpu"]);
        var submitted = await Task.WhenAll(Enumerable.Range(0, 50).Select(i =>
            Task.Run(() => appliance.SubmitAsync(JobKind.Generation, $"user{i % 5}", new { i }))));
        var ended = await Task.WhenAll(submitted.Select(j => appliance.WaitAsync(j.Id)));
        Assert.All(ended, j => Assert.Equal(JobState.Completed, j.State));
        Assert.Equal(submitted.Select(j => j.Id).Order(), runner.StartOrder.Order());
        Assert.InRange(runner.MostAtOnce, 1, 2);
    }

    public void Dispose() => Directory.Delete(data, recursive: true);
}
