using SdAppliance.Appliance.Jobs;

namespace SdAppliance.Appliance.Tests.Jobs;

/// <summary>"Sample now" and "save now" on a training job of the demo model, through the job service.</summary>
[Collection(EngineCollection.Name)]
public sealed class RunRequestTests : IDisposable
{
    private readonly string data = Directory.CreateTempSubdirectory("sdapp-run-requests-").FullName;

    public RunRequestTests() => TinyLora.MakeDataset(data);

    public void Dispose() => Directory.Delete(data, recursive: true);

    [Fact]
    public async Task Requests_are_taken_at_the_next_step_as_samples_and_a_save_and_leave_the_final_weights_unchanged()
    {
        await using var appliance = await TestAppliance.StartAsync(data, runners: [new TrainingJobRunner(TestAppliance.PathsFor(data), TestAppliance.OptionsFor(data))]);
        var alice = new Caller("alice", IsAdmin: false);
        var plain = await appliance.WaitAsync((await appliance.SubmitAsync(JobKind.Training, "alice", TinyLora.Request(steps: 6))).Id);
        Assert.False(await appliance.Jobs.RequestAsync(alice, plain.Id, RunRequest.Sample, CancellationToken.None));

        // Asked before the first step (the job may still be queued): taken at step 1's boundary.
        var asked = await appliance.SubmitAsync(JobKind.Training, "alice", TinyLora.Request(steps: 6));
        Assert.False(await appliance.Jobs.RequestAsync(new Caller("bob", IsAdmin: false), asked.Id, RunRequest.Save, CancellationToken.None));
        Assert.True(await appliance.Jobs.RequestAsync(alice, asked.Id, RunRequest.Sample, CancellationToken.None));
        Assert.True(await appliance.Jobs.RequestAsync(alice, asked.Id, RunRequest.Save, CancellationToken.None));
        var done = await appliance.WaitAsync(asked.Id);
        Assert.Equal(JobState.Completed, done.State);

        var run = Path.Combine(data, done.Folder);
        Assert.Equal(["step-000001-0.png"], Directory.GetFiles(Path.Combine(run, "samples")).Select(Path.GetFileName));
        Assert.True(Directory.Exists(Path.Combine(run, "checkpoints", "step-000001")));
        Assert.True(File.Exists(Path.Combine(run, $"{asked.Id}-step-000001.safetensors")));

        var events = new List<JobEvent>();
        await foreach (var e in appliance.Jobs.EventsAsync(asked.Id, 0, CancellationToken.None)) events.Add(e);
        var messages = events.Where(e => e.Type == JobEventTypes.Log).Select(e => e.Message).ToList();
        Assert.Contains("sampled step 1", messages);
        Assert.Contains($"saved step 1: {asked.Id}-step-000001.safetensors", messages);
        Assert.Contains(events, e => e.Type == JobEventTypes.Image && e.Image == $"runs/{asked.Id}/samples/step-000001-0.png");
        TinyLora.AssertSameTensors(TinyLora.LoraOf(data, plain), TinyLora.LoraOf(data, done));
    }
}
