using SdAppliance.Training.Runs;

namespace SdAppliance.Training.Tests;

public sealed class RunFolderTests : IDisposable
{
    private readonly string root = Directory.CreateTempSubdirectory("sdapp-run-").FullName;

    public void Dispose() => Directory.Delete(root, recursive: true);

    [Fact]
    public void AFolderWithoutRunJsonIsNotARunToResumeAndTheMessageNamesTheField()
    {
        var error = Assert.Throws<TrainingConfigException>(() => RunFolder.ToResume(root));
        Assert.StartsWith("resume: ", error.Message);
        Assert.Contains("run.json", error.Message);

        var run = new RunFolder(root);
        Assert.False(run.HoldsRun);
        Assert.Null(run.LatestState);
        run.SaveConfig(new TrainingConfig());
        Assert.Equal(new TrainingConfig().ToJson(), RunFolder.ToResume(root).LoadConfig().ToJson());
        // A state folder without its state.json makes a run (a new one would mix with it) but is no state to resume from.
        Directory.CreateDirectory(Path.Combine(run.StatesFolder, "step-000002"));
        Assert.True(run.HoldsRun);
        Assert.Null(run.LatestState);
        Assert.StartsWith("resume: ", Assert.Throws<TrainingConfigException>(run.StateToResume).Message);
        File.WriteAllText(Path.Combine(run.StatesFolder, "step-000002", "state.json"), "{}");
        Assert.Equal(Path.Combine(run.StatesFolder, "step-000002"), run.LatestState);
    }

    [Fact]
    public void UnfinishedWritesAreTheHiddenTemporariesOfAtomicWritesOnly()
    {
        var run = new RunFolder(root);
        Directory.CreateDirectory(run.StatesFolder);
        Directory.CreateDirectory(run.SamplesFolder);
        string[] leftovers =
        [
            Path.Combine(run.StatesFolder, ".step-000004.0123456789abcdef0123456789abcdef.tmp"),
            Path.Combine(run.StatesFolder, ".step-000003.0123456789abcdef0123456789abcdef.old"),
        ];
        foreach (var folder in leftovers) Directory.CreateDirectory(folder);
        string[] leftoverFiles = [Path.Combine(run.Path, ".report.json.x.tmp"), Path.Combine(run.SamplesFolder, ".step-000004-0.png.y.tmp")];
        string[] kept = [Path.Combine(run.Path, "notes.tmp"), Path.Combine(run.Path, ".hidden"), Path.Combine(run.StatesFolder, "step-000002.tmp")];
        foreach (var file in leftoverFiles.Concat(kept)) File.WriteAllText(file, "x");

        var removed = run.RemoveUnfinishedWrites();

        Assert.Equal(leftovers.Concat(leftoverFiles).Order(StringComparer.Ordinal), removed.Order(StringComparer.Ordinal));
        Assert.All(kept, f => Assert.True(File.Exists(f), f));
        Assert.Empty(new RunFolder(Path.Combine(root, "nothing-here")).RemoveUnfinishedWrites());
    }

    [Fact]
    public void EveryFieldHasADescriptionThatNamesFieldsNotFlags() =>
        Assert.All(TrainingConfig.Fields, f =>
        {
            var text = TrainingConfig.Description(f);
            Assert.False(string.IsNullOrWhiteSpace(text), TrainingConfig.FieldName(f));
            Assert.DoesNotContain("--", text);
        });
}
