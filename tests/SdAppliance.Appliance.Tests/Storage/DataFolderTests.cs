using SdAppliance.Appliance.Storage;

namespace SdAppliance.Appliance.Tests.Storage;

public sealed class DataFolderTests : IDisposable
{
    private readonly string temp = Directory.CreateTempSubdirectory("sdapp-data-").FullName;

    [Fact]
    public void Create_makes_every_folder_of_the_layout()
    {
        var data = new DataFolder(Path.Combine(temp, "data")).Create();
        foreach (var folder in (string[])["models", "models/lora", "models/embeddings", "models/hypernetworks", "datasets", "runs", "outputs", "jobs", "cache"])
            Assert.True(Directory.Exists(Path.Combine(temp, "data", folder)), folder);
        Assert.Equal(Path.Combine(temp, "data", "appliance.db"), data.Database);
        Assert.Equal(Path.Combine(temp, "data", "outputs", "2026-12-02"), data.OutputsOn(new DateTime(2026, 12, 2, 23, 59, 0, DateTimeKind.Utc)));
    }

    [Fact]
    public void The_data_option_wins_and_the_application_root_is_found_upwards_with_the_demo_model()
    {
        var data = DataFolder.Discover(Path.Combine(temp, "given"));
        Assert.Equal(Path.Combine(temp, "given"), data.FullPath);
        Assert.NotNull(data.ApplicationRoot);
        Assert.Equal(Path.Combine(data.ApplicationRoot, "models", "demo"), data.DemoModel);
        Assert.Null(new DataFolder(temp).DemoModel);
    }

    [Fact]
    public async Task At_start_the_leftovers_of_killed_writes_are_removed_and_nothing_else()
    {
        var data = new DataFolder(Path.Combine(temp, "data")).Create();
        string[] leftovers =
        [
            Path.Combine(data.Models, ".big.safetensors.0123abcd.tmp"),
            Path.Combine(data.Loras, ".style.safetensors.0123abcd.tmp"),
            Path.Combine(data.Datasets, "cats", ".upload.0123abcd.tmp"),
            Path.Combine(data.Datasets, "cats", "10_cat", ".a.txt.0123abcd.tmp"),
            Path.Combine(data.Datasets, ".dogs.0123abcd.old"),
            Path.Combine(data.Outputs, "2026-12-02", ".00001-42.png.0123abcd.tmp"),
        ];
        string[] kept = [Path.Combine(data.Datasets, "cats", "10_cat", "a.png"), Path.Combine(data.Outputs, "2026-12-02", "00001-42.png"), Path.Combine(data.Runs, ".x.0123abcd.tmp")];
        foreach (var path in leftovers.Concat(kept))
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            if (path.Contains("upload") || path.EndsWith(".old", StringComparison.Ordinal)) Directory.CreateDirectory(path);
            else File.WriteAllText(path, "x");
        }
        await new LeftoverCleanup(data).StartAsync(CancellationToken.None);
        Assert.All(leftovers, path => Assert.False(File.Exists(path) || Directory.Exists(path), path));
        Assert.All(kept, path => Assert.True(File.Exists(path), path));
    }

    public void Dispose() => Directory.Delete(temp, recursive: true);
}
