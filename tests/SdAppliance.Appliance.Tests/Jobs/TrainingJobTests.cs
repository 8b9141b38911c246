using Microsoft.Data.Sqlite;
using Microsoft.EntityFrameworkCore;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Persistence;
using SdAppliance.Formats;
using SdAppliance.Training;

namespace SdAppliance.Appliance.Tests.Jobs;

/// <summary>Training jobs on the demo model: a generation during a run, a run interrupted by a restart.</summary>
[Collection(EngineCollection.Name)]
public sealed class TrainingJobTests : IDisposable
{
    private readonly string data = Directory.CreateTempSubdirectory("sdapp-train-jobs-").FullName;

    public TrainingJobTests() => TinyLora.MakeDataset(data);


    [Fact]
    public async Task A_generation_submitted_during_training_is_answered_before_the_run_ends_and_the_weights_stay_those_of_an_unpaused_run()
    {
        // The appliance's own runners: its training and its generation (the one the A1111 and REST APIs queue).
        await using var appliance = await TestAppliance.StartAsync(data, runners: null);
        var unpaused = await appliance.WaitAsync((await appliance.SubmitAsync(JobKind.Training, "alice", TinyLora.Request(steps: 8))).Id);
        Assert.Equal(JobState.Completed, unpaused.State);

        var training = await appliance.SubmitAsync(JobKind.Training, "alice", TinyLora.Request(steps: 8));
        await StartedAsync(appliance, training.Id);
        // Queued once the run holds the device (before its first step, however fast the steps are): it waits for a step boundary.
        var generation = await appliance.SubmitAsync(JobKind.Generation, "bob", new { prompt = "a red square", steps = 4, width = 64, height = 64, seed = 3 });

        var trained = await appliance.WaitAsync(training.Id);
        var generated = await appliance.WaitAsync(generation.Id);
        Assert.Equal(JobState.Completed, trained.State);
        Assert.Equal(JobState.Completed, generated.State);
        // It ran on the device the run held, while the run was under way: at a step boundary.
        Assert.Equal(trained.Device, generated.Device);
        Assert.True(generated.StartedUtc > trained.StartedUtc && generated.FinishedUtc < trained.FinishedUtc,
            $"generation {generated.StartedUtc:O}..{generated.FinishedUtc:O}, training {trained.StartedUtc:O}..{trained.FinishedUtc:O}");
        Assert.True(File.Exists(Path.Combine(data, generated.Result!.Value.GetProperty("images")[0].GetProperty("file").GetString()!)));
        TinyLora.AssertSameTensors(TinyLora.LoraOf(data, unpaused), TinyLora.LoraOf(data, trained));
    }

    /// <summary>
    /// A job of two ranks on two CPU device slots: the ranks run as sdapp train runs them (this build's sdapp, from the
    /// CLI project's output beside this test's), and the job follows their steps and ends with rank 0's result.
    /// </summary>
    [Fact]
    public async Task A_run_of_two_ranks_trains_in_processes_of_its_own_and_reports_every_step()
    {
        var configuration = new DirectoryInfo(Path.TrimEndingDirectorySeparator(AppContext.BaseDirectory)).Parent!.Name;  // bin/CONFIGURATION/net10.0
        var sdapp = Path.Combine(TestAppliance.RepositoryRoot, "src", "SdAppliance.Cli", "bin", configuration, "net10.0", "sdapp.dll");
        Assert.True(File.Exists(sdapp), $"{sdapp} is missing: build the solution (the CLI is what starts the ranks)");
        string[] train = [Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet", sdapp, "train"];
        await using var appliance = await TestAppliance.StartAsync(data, runners: null, devices: ["cpu", "cpu"], trainingCommand: train);
        var request = new Dictionary<string, object?>((IDictionary<string, object?>)TinyLora.Request(steps: 3)) { ["num_processes"] = 2 };
        var job = await appliance.WaitAsync((await appliance.SubmitAsync(JobKind.Training, "alice", request)).Id);

        Assert.True(job.State == JobState.Completed, job.Error);
        Assert.Equal(("cpu,cpu", 3L), (job.Device, job.Step));
        Assert.True(File.Exists(TinyLora.LoraOf(data, job)));
        var history = await EventsOf(appliance, job.Id);
        Assert.Equal([1L, 2L, 3L], history.Where(e => e.Type == JobEventTypes.Step).Select(e => e.Step));
        Assert.Contains(history, e => e.Type == JobEventTypes.Log && e.Message!.StartsWith("launching ranks 0-1 of 2 on this machine", StringComparison.Ordinal));
    }

    [Fact]
    public async Task After_a_restart_a_training_run_resumes_from_its_checkpoint_a_running_generation_runs_again_and_queued_jobs_stay_queued()
    {
        Guid training, generation, queued;
        var generator = new ControlledRunner(JobKind.Generation, usesDevice: true);
        await using (var before = await TestAppliance.StartAsync(data, [new TrainingJobRunner(TestAppliance.PathsFor(data), TestAppliance.OptionsFor(data)), generator]))
        {
            training = (await before.SubmitAsync(JobKind.Training, "alice", TinyLora.Request(steps: 12, saveEvery: 1))).Id;
            // The generation takes the device at one of the run's step boundaries from step 2 on and holds it until the stop.
            await StepAsync(before, training, atLeast: 2);
            generation = (await before.SubmitAsync(JobKind.Generation, "bob", new { prompt = "x" })).Id;
            await generator.WaitStartedAsync(generation);
            queued = (await before.SubmitAsync(JobKind.Training, "carol", TinyLora.Request(steps: 2))).Id;
        }

        Assert.Equal(JobState.Running, StateInDatabase(training));
        Assert.Equal(JobState.Running, StateInDatabase(generation));
        Assert.Equal(JobState.Queued, StateInDatabase(queued));
        // As after kill -9 mid-step: the state of the step the run stopped at was never written; earlier ones were.
        var states = Directory.EnumerateDirectories(Path.Combine(data, "runs", training.ToString(), "checkpoints")).Order(StringComparer.Ordinal).ToList();
        Assert.InRange(states.Count, 2, 11);
        Directory.Delete(states[^1], recursive: true);
        var resumeFrom = Path.GetFileName(states[^2]);

        await using var after = await TestAppliance.StartAsync(data, [new TrainingJobRunner(TestAppliance.PathsFor(data), TestAppliance.OptionsFor(data)), new ControlledRunner(JobKind.Generation, usesDevice: true, completeAtOnce: true)]);
        var resumed = await after.WaitAsync(training);
        var regenerated = await after.WaitAsync(generation);
        var laterRun = await after.WaitAsync(queued);
        Assert.Equal((JobState.Completed, 2, 12L), (resumed.State, resumed.Attempts, resumed.Step));
        Assert.Equal((JobState.Completed, 2), (regenerated.State, regenerated.Attempts));
        Assert.Equal((JobState.Completed, 1), (laterRun.State, laterRun.Attempts));
        var history = await EventsOf(after, training);
        var resuming = history.FindIndex(e => e.Type == JobEventTypes.Log && e.Message == $"resuming from {resumeFrom}");
        Assert.True(resuming > 0, string.Join("; ", history.Where(e => e.Type == JobEventTypes.Log).Select(e => e.Message)));
        Assert.Equal(long.Parse(resumeFrom["step-".Length..], System.Globalization.CultureInfo.InvariantCulture) + 1,
            history.Skip(resuming).First(e => e.Type == JobEventTypes.Step).Step);

        var uninterrupted = await after.WaitAsync((await after.SubmitAsync(JobKind.Training, "alice", TinyLora.Request(steps: 12, saveEvery: 1))).Id);
        TinyLora.AssertSameTensors(TinyLora.LoraOf(data, uninterrupted), TinyLora.LoraOf(data, resumed));
    }

    [Fact]
    public async Task Cancelling_a_running_training_job_stops_the_trainer_which_keeps_a_state_and_resuming_it_ends_as_an_uninterrupted_run()
    {
        var generator = new ControlledRunner(JobKind.Generation, usesDevice: true);
        await using var appliance = await TestAppliance.StartAsync(data, [new TrainingJobRunner(TestAppliance.PathsFor(data), TestAppliance.OptionsFor(data)), generator]);
        var uninterrupted = await appliance.WaitAsync((await appliance.SubmitAsync(JobKind.Training, "alice", TinyLora.Request(steps: 8))).Id);

        var training = await appliance.SubmitAsync(JobKind.Training, "alice", TinyLora.Request(steps: 8));
        await StartedAsync(appliance, training.Id);
        // A generation holds the run at a step boundary, so the cancellation lands mid-run however fast the steps are.
        var generation = await appliance.SubmitAsync(JobKind.Generation, "bob", new { });
        await generator.WaitStartedAsync(generation.Id);
        var alice = new Caller("alice", IsAdmin: false);
        Assert.True(await appliance.Jobs.CancelAsync(alice, training.Id, CancellationToken.None));
        generator.Complete(generation.Id);
        var cancelled = await appliance.WaitAsync(training.Id);
        Assert.Equal(JobState.Cancelled, cancelled.State);
        Assert.InRange(cancelled.Step, 1, 7);
        Assert.NotNull(new SdAppliance.Training.Runs.RunFolder(Path.Combine(data, cancelled.Folder)).LatestState);

        Assert.Null(await appliance.Jobs.ResumeAsync(new Caller("bob", IsAdmin: false), training.Id, CancellationToken.None));
        Assert.Equal(JobState.Queued, (await appliance.Jobs.ResumeAsync(alice, training.Id, CancellationToken.None))!.State);
        var resumed = await appliance.WaitAsync(training.Id);
        Assert.Equal((JobState.Completed, 8L, 2), (resumed.State, resumed.Step, resumed.Attempts));
        TinyLora.AssertSameTensors(TinyLora.LoraOf(data, uninterrupted), TinyLora.LoraOf(data, resumed));
    }

    [Fact]
    public async Task A_bad_training_request_is_refused_when_submitted_naming_the_field()
    {
        await using var appliance = await TestAppliance.StartAsync(data, [new TrainingJobRunner(TestAppliance.PathsFor(data), TestAppliance.OptionsFor(data))]);
        var rank = await Assert.ThrowsAsync<TrainingConfigException>(() =>
            appliance.SubmitAsync(JobKind.Training, "alice", new Dictionary<string, object> { ["data"] = "datasets/squares", ["network_dim"] = 0 }));
        Assert.StartsWith("network_dim:", rank.Message, StringComparison.Ordinal);
        var outside = await Assert.ThrowsAsync<UserInputException>(() => appliance.SubmitAsync(JobKind.Training, "alice", new { data = "../../etc" }));
        Assert.Equal("data", outside.Subject);
        Assert.Contains("'../../etc'", outside.Message, StringComparison.Ordinal);
        // The mask folder of masked_loss is a path of the data folder too.
        var masks = await Assert.ThrowsAsync<UserInputException>(() =>
            appliance.SubmitAsync(JobKind.Training, "alice", new { data = "datasets/squares", masked_loss = true, conditioning_data_dir = "../../etc" }));
        Assert.Equal("conditioning_data_dir", masks.Subject);
        var unknown = await Assert.ThrowsAsync<TrainingConfigException>(() => appliance.SubmitAsync(JobKind.Training, "alice", new { data = "datasets/squares", network_rank = 4 }));
        Assert.StartsWith("network_rank: not a setting (in 'request')", unknown.Message, StringComparison.Ordinal);
        Assert.Empty(await appliance.Jobs.ListAsync(new Caller("alice", IsAdmin: false), null, CancellationToken.None));
    }

    /// <summary>Returns once the job holds its device (the scheduler records that before it looks at the queue again).</summary>
    private static async Task StartedAsync(TestAppliance appliance, Guid job)
    {
        using var timeout = new CancellationTokenSource(TestAppliance.Patience);
        await foreach (var e in appliance.Jobs.EventsAsync(job, 0, timeout.Token))
            if (e.Type == JobEventTypes.State && e.State == JobState.Running) return;
        Assert.Fail($"job {job} ended without running");
    }

    private static async Task StepAsync(TestAppliance appliance, Guid job, long atLeast)
    {
        using var timeout = new CancellationTokenSource(TestAppliance.Patience);
        await foreach (var e in appliance.Jobs.EventsAsync(job, 0, timeout.Token))
            if (e.Type == JobEventTypes.Step && e.Step >= atLeast) return;
        Assert.Fail($"job {job} ended before step {atLeast}");
    }

    private static async Task<List<JobEvent>> EventsOf(TestAppliance appliance, Guid job)
    {
        using var timeout = new CancellationTokenSource(TestAppliance.Patience);
        var events = new List<JobEvent>();
        await foreach (var e in appliance.Jobs.EventsAsync(job, 0, timeout.Token)) events.Add(e);
        return events;
    }

    private JobState StateInDatabase(Guid job)
    {
        var options = new DbContextOptionsBuilder<ApplianceDb>().UseSqlite($"Data Source={Path.Combine(data, "appliance.db")}").Options;
        using var db = new ApplianceDb(options);
        return db.Jobs.Single(j => j.Id == job).State;
    }

    public void Dispose()
    {
        SqliteConnection.ClearAllPools();
        Directory.Delete(data, recursive: true);
    }
}
