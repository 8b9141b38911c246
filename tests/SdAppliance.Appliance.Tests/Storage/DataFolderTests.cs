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

    public void Dispose() => Directory.Delete(temp, recursive: true);
}
