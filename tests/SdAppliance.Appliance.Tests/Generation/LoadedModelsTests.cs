using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using SdAppliance.Appliance.Catalog;
using SdAppliance.Appliance.Generation;
using SdAppliance.Appliance.Tests.Jobs;
using SdAppliance.Torch;

namespace SdAppliance.Appliance.Tests.Generation;

/// <summary>Models are loaded once per model and device, and only a few are kept.</summary>
public sealed class LoadedModelsTests : IDisposable
{
    private readonly string data = Directory.CreateTempSubdirectory("sdapp-models-").FullName;

    [Fact]
    public async Task A_model_is_loaded_once_and_the_least_recently_used_beyond_the_bound_is_freed()
    {
        var services = new ServiceCollection().AddAppliance(TestAppliance.OptionsFor(data));
        services.AddSingleton(new GenerationOptions { ModelsPerDevice = 1 });
        await using var provider = services.BuildServiceProvider();
        var generation = provider.GetRequiredService<GenerationService>();
        // A second model: a copy of the demo folder, the same weights under another path.
        var copy = Path.Combine(data, "models", "copy");
        CopyFolder(TestAppliance.DemoModel, copy);

        var first = generation.Load(Entry(TestAppliance.DemoModel), Device.Cpu, CancellationToken.None);
        Assert.Same(first, generation.Load(Entry(TestAppliance.DemoModel), Device.Cpu, CancellationToken.None));
        var other = generation.Load(Entry(copy), Device.Cpu, CancellationToken.None);
        Assert.NotSame(first, other);
        var again = generation.Load(Entry(TestAppliance.DemoModel), Device.Cpu, CancellationToken.None);
        Assert.NotSame(first, again);  // freed when the copy came in: a bound of one keeps one
        Assert.Same(again, generation.Load(Entry(TestAppliance.DemoModel), Device.Cpu, CancellationToken.None));
    }

    private static ModelEntry Entry(string path) =>
        new(ModelKind.Checkpoint, Path.GetFileName(path), Path.GetFileName(path), Path.GetFileName(path), path, 0, DateTime.UtcNow,
            null, null, null, null, new Dictionary<string, string>(), null, null, null, false, false);

    private static void CopyFolder(string from, string to)
    {
        foreach (var file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            if (Path.GetExtension(file) == ".safetensors" && Path.GetDirectoryName(file) == from) continue;  // the single file is not part of the folder model
            var target = Path.Combine(to, Path.GetRelativePath(from, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
    }

    public void Dispose()
    {
        SqliteConnection.ClearAllPools();
        Directory.Delete(data, recursive: true);
    }
}
