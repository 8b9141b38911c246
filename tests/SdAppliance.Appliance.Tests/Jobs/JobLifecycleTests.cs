using SdAppliance.Appliance.Jobs;
using SdAppliance.Training;

namespace SdAppliance.Appliance.Tests.Jobs;

public sealed class JobLifecycleTests : IDisposable
{
    private readonly string data = Directory.CreateTempSubdirectory("sdapp-jobs-").FullName;
    private static readonly Caller Alice = new("alice", IsAdmin: false);
    private static readonly Caller Bob = new("bob", IsAdmin: false);
    private static readonly Caller Admin = new("root", IsAdmin: true);

    [Fact]
    public async Task A_job_goes_from_queued_to_running_to_completed_with_its_result()
    {
        var runner = new ControlledRunner(JobKind.Conversion, usesDevice: false);
        await using var appliance = await TestAppliance.StartAsync(data, [runner]);
        var job = await appliance.SubmitAsync(JobKind.Conversion, "alice", new { input = "x" });
        Assert.Equal(JobState.Queued, job.State);
        Assert.Equal(Path.Combine("jobs", job.Id.ToString()), job.Folder);

        await runner.WaitStartedAsync(job.Id);
        var running = await appliance.Jobs.GetAsync(Alice, job.Id, CancellationToken.None);
        Assert.Equal(JobState.Running, running!.State);
        Assert.Equal("cpu", running.Device);
        Assert.Equal("x", running.Request.GetProperty("input").GetString());

        runner.Complete(job.Id, new { file = "out.safetensors" });
        var done = await appliance.WaitAsync(job.Id);
        Assert.Equal(JobState.Completed, done.State);
        Assert.Equal("out.safetensors", done.Result!.Value.GetProperty("file").GetString());
        Assert.NotNull(done.StartedUtc);
        Assert.NotNull(done.FinishedUtc);
        Assert.Equal(1, done.Attempts);
    }

    [Fact]
    public async Task A_failed_job_keeps_the_message_and_a_user_input_error_its_full_text()
    {
        var runner = new ControlledRunner(JobKind.Conversion, usesDevice: false);
        await using var appliance = await TestAppliance.StartAsync(data, [runner]);
        var crash = await appliance.SubmitAsync(JobKind.Conversion, "alice", new { });
        var refused = await appliance.SubmitAsync(JobKind.Conversion, "alice", new { });
        runner.Fail(crash.Id, new InvalidOperationException("the disk went away"));
        runner.Fail(refused.Id, new TrainingConfigException("network_dim: 0 must be at least 1"));

        var failed = await appliance.WaitAsync(crash.Id);
        Assert.Equal(JobState.Failed, failed.State);
        Assert.Equal("the disk went away", failed.Error);
        Assert.Equal("network_dim: 0 must be at least 1", (await appliance.WaitAsync(refused.Id)).Error);
    }

    [Fact]
    public async Task A_job_without_a_runner_fails_saying_so()
    {
        await using var appliance = await TestAppliance.StartAsync(data, []);
        var job = await appliance.SubmitAsync(JobKind.ClassImages, "alice", new { });
        var failed = await appliance.WaitAsync(job.Id);
        Assert.Equal(JobState.Failed, failed.State);
        Assert.Contains("no runner for ClassImages jobs", failed.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Cancelling_a_queued_job_ends_it_and_a_running_one_reaches_its_runner()
    {
        var runner = new ControlledRunner(JobKind.Generation, usesDevice: true);
        await using var appliance = await TestAppliance.StartAsync(data, [runner]);
        var first = await appliance.SubmitAsync(JobKind.Generation, "alice", new { });
        var second = await appliance.SubmitAsync(JobKind.Generation, "alice", new { });
        await runner.WaitStartedAsync(first.Id);

        Assert.True(await appliance.Jobs.CancelAsync(Alice, second.Id, CancellationToken.None));
        Assert.Equal(JobState.Cancelled, (await appliance.WaitAsync(second.Id)).State);
        Assert.True(await appliance.Jobs.CancelAsync(Alice, first.Id, CancellationToken.None));
        Assert.Equal(JobState.Cancelled, (await appliance.WaitAsync(first.Id)).State);
        Assert.DoesNotContain(second.Id, runner.StartOrder);
        Assert.False(await appliance.Jobs.CancelAsync(Alice, first.Id, CancellationToken.None));  // it has ended
    }

    [Fact]
    public async Task A_user_sees_and_cancels_only_their_own_jobs_and_an_admin_all()
    {
        var runner = new ControlledRunner(JobKind.Generation, usesDevice: true);
        await using var appliance = await TestAppliance.StartAsync(data, [runner]);
        var blocker = await appliance.SubmitAsync(JobKind.Generation, "root", new { });
        await runner.WaitStartedAsync(blocker.Id);
        var alices = await appliance.SubmitAsync(JobKind.Generation, "alice", new { });
        var bobs = await appliance.SubmitAsync(JobKind.Generation, "bob", new { });

        Assert.Null(await appliance.Jobs.GetAsync(Bob, alices.Id, CancellationToken.None));
        Assert.NotNull(await appliance.Jobs.GetAsync(Alice, alices.Id, CancellationToken.None));
        Assert.NotNull(await appliance.Jobs.GetAsync(Admin, alices.Id, CancellationToken.None));
        Assert.Equal([alices.Id], (await appliance.Jobs.ListAsync(Alice, null, CancellationToken.None)).Select(j => j.Id));
        Assert.Equal([bobs.Id, alices.Id, blocker.Id], (await appliance.Jobs.ListAsync(Admin, null, CancellationToken.None)).Select(j => j.Id));
        Assert.Equal([bobs.Id, alices.Id], (await appliance.Jobs.ListAsync(Admin, JobState.Queued, CancellationToken.None)).Select(j => j.Id));

        Assert.False(await appliance.Jobs.CancelAsync(Bob, alices.Id, CancellationToken.None));
        Assert.Equal(JobState.Queued, (await appliance.Jobs.GetAsync(Alice, alices.Id, CancellationToken.None))!.State);
        Assert.True(await appliance.Jobs.CancelAsync(Admin, alices.Id, CancellationToken.None));
        Assert.True(await appliance.Jobs.CancelAsync(Admin, bobs.Id, CancellationToken.None));
        runner.Complete(blocker.Id);
        await appliance.WaitAsync(blocker.Id);
    }

    public void Dispose() => Directory.Delete(data, recursive: true);
}
