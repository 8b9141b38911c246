using SdAppliance.Appliance.Catalog;
using SdAppliance.Appliance.Generation;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Tests.Jobs;
using SdAppliance.Diffusion.Tests;
using SdAppliance.Formats;
using SdAppliance.Imaging;

namespace SdAppliance.Appliance.Tests.Generation;

/// <summary>A generation job that names a refiner: an SDXL base from models/ hands off to a refiner from models/.</summary>
public sealed class RefinerJobTests : IDisposable
{
    private static readonly Caller Alice = new("alice", IsAdmin: false);
    private readonly string data = Directory.CreateTempSubdirectory("sdapp-refiner-jobs-").FullName;

    [Fact]
    public async Task A_job_with_a_refiner_is_finished_by_it_and_its_png_info_says_so()
    {
        var fixture = Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sdxl");
        foreach (var file in Directory.EnumerateFiles(fixture, "*", SearchOption.AllDirectories))
        {
            var target = Path.Combine(data, "models", "tiny-sdxl", Path.GetRelativePath(fixture, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
        TinyRefiner.Write(Path.Combine(data, "models", "tiny-refiner"), Path.Combine(data, "tiny-refiner.safetensors"));
        await using var appliance = await TestAppliance.StartAsync(data, runners: null);
        var checkpoints = await appliance.Service<ModelCatalog>().ListAsync(Alice, ModelKind.Checkpoint, CancellationToken.None);
        Assert.Equal(ModelCatalog.SdxlRefinerFamily, Assert.Single(checkpoints, m => m.Name == "tiny-refiner").Family);
        Assert.Equal(ModelCatalog.SdxlFamily, Assert.Single(checkpoints, m => m.Name == "tiny-sdxl").Family);

        var request = new GenerationJobRequest
        {
            Model = "tiny-sdxl", Refiner = "tiny-refiner", RefinerSwitchAt = 0.5, Prompt = "a red circle", Steps = 4, Seed = 5, Sampler = "Euler", Width = 64, Height = 64,
        };
        var generation = appliance.Service<GenerationService>();
        var prepared = await generation.PrepareAsync(Alice, request, null, CancellationToken.None);
        var job = await appliance.SubmitAsync(JobKind.Generation, "alice", prepared.ToJson());
        var done = await appliance.WaitAsync(job.Id);
        Assert.True(done.State == JobState.Completed, done.Error);
        var image = Assert.Single(GenerationJobResult.FromJson(done.Result!.Value).Images);
        var info = A1111Parameters.Parse(image.Infotext);
        Assert.Equal(("tiny-refiner", "0.5"), (info["Refiner"], info["Refiner switch at"]));

        var unknown = await Assert.ThrowsAnyAsync<UserInputException>(() => generation.PrepareAsync(Alice, request with { Refiner = "no-such-refiner" }, null, CancellationToken.None));
        Assert.Equal("refiner", unknown.Subject);
        var alone = Assert.ThrowsAny<UserInputException>(() => generation.Check(request with { Refiner = null }));
        Assert.Equal("refiner_switch_at", alone.Subject);
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(data, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
