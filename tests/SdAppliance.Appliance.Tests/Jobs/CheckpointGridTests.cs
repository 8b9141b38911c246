using SdAppliance.Appliance.Catalog;
using SdAppliance.Appliance.Generation;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Runs;
using SdAppliance.Formats;
using SdAppliance.Training.Runs;

namespace SdAppliance.Appliance.Tests.Jobs;

/// <summary>The checkpoint × prompt grid of a LoRA run on the demo model: generated through the queue, the best exported.</summary>
[Collection(EngineCollection.Name)]
public sealed class CheckpointGridTests : IDisposable
{
    private readonly string data = Directory.CreateTempSubdirectory("sdapp-grid-").FullName;

    public CheckpointGridTests() => TinyLora.MakeDataset(data);

    public void Dispose() => Directory.Delete(data, recursive: true);

    [Fact]
    public async Task A_grid_generates_each_checkpoint_and_prompt_with_the_same_seed_and_the_best_is_exported_to_the_catalog()
    {
        await using var appliance = await TestAppliance.StartAsync(data, runners: null);
        var alice = new Caller("alice", IsAdmin: false);
        var bob = new Caller("bob", IsAdmin: false);
        var submitted = await appliance.SubmitAsync(JobKind.Training, "alice", TinyLora.Request(steps: 4));
        Assert.True(await appliance.Jobs.RequestAsync(alice, submitted.Id, RunRequest.Save, CancellationToken.None));
        var run = await appliance.WaitAsync(submitted.Id);
        Assert.Equal(JobState.Completed, run.State);
        var folder = new RunFolder(Path.Combine(data, run.Folder));
        var step1 = $"{run.Id}-step-000001.safetensors";
        var final = $"{run.Id}.safetensors";
        Assert.Equal([new RunLora(step1, 1), new RunLora(final, null)], CheckpointGrid.Loras(folder));

        var grid = appliance.Service<CheckpointGrid>();
        Assert.Equal("checkpoints", (await Assert.ThrowsAsync<UserInputException>(() =>
            grid.SubmitAsync(alice, run.Id, new GridSelection([], ["a red square"]), CancellationToken.None))).Subject);
        Assert.Equal("run", (await Assert.ThrowsAsync<UserInputException>(() =>
            grid.SubmitAsync(bob, run.Id, new GridSelection([final], ["a red square"]), CancellationToken.None))).Subject);

        var plan = await grid.SubmitAsync(alice, run.Id, new GridSelection([step1, final], ["a red square", "", "a blue square"], Seed: 5, Steps: 2), CancellationToken.None);
        Assert.Equal([(step1, 0), (step1, 1), (final, 0), (final, 1)], plan.Cells.Select(c => (c.Checkpoint, c.Prompt)));
        Assert.Equal(["a red square", "a blue square"], plan.Selection.Prompts);
        foreach (var cell in plan.Cells)
        {
            var job = await appliance.WaitAsync(cell.Job);
            Assert.True(job.State == JobState.Completed, job.Error);
            var result = GenerationJobResult.FromJson(job.Result!.Value);
            Assert.Equal(5, Assert.Single(result.Images).Seed);
            Assert.Equal(64, result.Width);
            Assert.Contains(job.Request.GetProperty("loras").EnumerateArray(), l => l.GetProperty("name").GetString() == $"run-{run.Id.ToString("N")[..8]}-{Path.GetFileNameWithoutExtension(cell.Checkpoint)}");
        }
        // The grid's LoRAs are the caller's own.
        var catalog = appliance.Service<ModelCatalog>();
        Assert.NotNull(await catalog.FindAsync(alice, ModelKind.Lora, $"run-{run.Id.ToString("N")[..8]}-{run.Id}", CancellationToken.None));
        Assert.Null(await catalog.FindAsync(bob, ModelKind.Lora, $"run-{run.Id.ToString("N")[..8]}-{run.Id}", CancellationToken.None));

        var exported = await grid.ExportAsync(alice, run.Id, step1, "squares", isPrivate: false, CancellationToken.None);
        Assert.Equal("squares", exported.Name);
        Assert.Equal(File.ReadAllBytes(Path.Combine(folder.Path, step1)), File.ReadAllBytes(exported.Path));
        Assert.NotNull(await catalog.FindAsync(bob, ModelKind.Lora, "squares", CancellationToken.None));
        // An existing LoRA is never replaced.
        await Assert.ThrowsAsync<UserInputException>(() => grid.ExportAsync(alice, run.Id, final, "squares", isPrivate: false, CancellationToken.None));
        Assert.Equal(File.ReadAllBytes(Path.Combine(folder.Path, step1)), File.ReadAllBytes(exported.Path));
    }

    [Fact]
    public void A_selection_names_what_is_wrong_by_field()
    {
        Assert.Empty(new GridSelection(["a.safetensors"], ["a prompt"]).Problems());
        var wrong = new GridSelection([.. Enumerable.Range(0, 9).Select(i => $"{i}.safetensors")], [" ", ""], Seed: -1, Steps: 0).Problems();
        Assert.Equal("choose at most 8 checkpoints (got 9)", wrong["checkpoints"]);
        Assert.Equal("give at least one prompt, one a line", wrong["prompts"]);
        Assert.Equal("a grid needs a fixed seed (0 or more), got -1", wrong["seed"]);
        Assert.Equal("must be 1 to 150, got 0", wrong["steps"]);
    }
}
