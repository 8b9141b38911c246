using System.Text.Json.Nodes;
using Microsoft.Data.Sqlite;
using SdAppliance.Appliance.Generation;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Tests.Jobs;
using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Imaging;

namespace SdAppliance.Appliance.Tests.Generation;

/// <summary>
/// A generation that leaves the sampler, steps and CFG scale out gets its model's (a Turbo copy of the demo model, the
/// LCM-LoRA named in a prompt), whichever front end queued it: prepared, or queued raw and filled in by the runner.
/// </summary>
public sealed class FewStepDefaultsTests : IDisposable
{
    private static readonly Caller Alice = new("alice", IsAdmin: false);
    private readonly string data = Directory.CreateTempSubdirectory("sdapp-fewstep-jobs-").FullName;

    /// <summary>The demo model's folder as <c>models/sdxl-turbo</c>, its scheduler config as SDXL Turbo ships it.</summary>
    private void CopyDemoAsTurbo()
    {
        var to = Path.Combine(data, "models", "sdxl-turbo");
        foreach (var file in Directory.EnumerateFiles(TestAppliance.DemoModel, "*", SearchOption.AllDirectories))
        {
            if (Path.GetExtension(file) == ".safetensors" && Path.GetDirectoryName(file) == TestAppliance.DemoModel) continue;  // the single file is another model
            var target = Path.Combine(to, Path.GetRelativePath(TestAppliance.DemoModel, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
        var schedulerFile = Path.Combine(to, "scheduler", "scheduler_config.json");
        var scheduler = JsonNode.Parse(File.ReadAllText(schedulerFile))!.AsObject();
        scheduler["_class_name"] = "EulerAncestralDiscreteScheduler";
        scheduler["timestep_spacing"] = "trailing";
        File.WriteAllText(schedulerFile, scheduler.ToJsonString());
    }

    private static (string? Sampler, int? Steps, double? CfgScale, string? Scheduler) Chosen(GenerationJobRequest r) => (r.Sampler, r.Steps, r.CfgScale, r.Scheduler);

    [Fact]
    public async Task Left_out_fields_take_the_models_defaults_when_prepared()
    {
        CopyDemoAsTurbo();
        await using var appliance = await TestAppliance.StartAsync(data, runners: null);
        var generation = appliance.Service<GenerationService>();
        var none = CancellationToken.None;

        var turbo = new GenerationJobRequest { Model = "sdxl-turbo", Prompt = "a red circle" };
        Assert.Equal(("Euler a", 1, 1.0, "sgm_uniform"), Chosen(await generation.PrepareAsync(Alice, turbo, null, none)));
        // What the user gave stays; a schedule type they chose too.
        Assert.Equal(("DDIM", 3, 1.0, "normal"), Chosen(await generation.PrepareAsync(Alice, turbo with { Sampler = "DDIM", Steps = 3, Scheduler = "normal" }, null, none)));

        var demo = new GenerationJobRequest { Prompt = "a red circle" };
        Assert.Equal(("DPM++ 2M Karras", 20, 7.0, (string?)null), Chosen(await generation.PrepareAsync(Alice, demo, null, none)));
        // A front end with other defaults for an ordinary model (A1111's API) gives them; a Turbo model keeps its own.
        var a1111 = new GenerationDefaults(FewStepKind.None, "Euler", 50, 7, null, "A1111's API defaults");
        Assert.Equal(("Euler", 50, 7.0, (string?)null), Chosen(await generation.WithModelDefaultsAsync(Alice, demo, false, a1111, none)));
        Assert.Equal(("Euler a", 1, 1.0, "sgm_uniform"), Chosen(await generation.WithModelDefaultsAsync(Alice, turbo, false, a1111, none)));
        // img2img at strength 0.5 takes two Turbo steps, so that one runs.
        Assert.Equal(2, (await generation.WithModelDefaultsAsync(Alice, turbo with { Strength = 0.5 }, true, null, none)).Steps);

        var withLcmLora = demo with { Prompt = "a red circle <lora:lcm-lora-sdv1-5:1>" };
        Assert.Equal(("LCM", 4, 1.0, (string?)null), Chosen(await generation.WithModelDefaultsAsync(Alice, withLcmLora, false, null, none)));
        Assert.Equal(("LCM", 4, 1.0, (string?)null), Chosen(await generation.WithModelDefaultsAsync(Alice, demo with { Loras = [new LoraWeight("LCM_LoRA_Weights")] }, false, null, none)));
    }

    [Fact]
    public async Task A_job_queued_without_them_runs_with_the_models_defaults()
    {
        CopyDemoAsTurbo();
        await using var appliance = await TestAppliance.StartAsync(data, runners: null);
        var request = new GenerationJobRequest { Model = "sdxl-turbo", Prompt = "a red circle", Seed = 4, Width = 64, Height = 64 };
        var done = await appliance.WaitAsync((await appliance.SubmitAsync(JobKind.Generation, "alice", request.ToJson())).Id);
        Assert.True(done.State == JobState.Completed, done.Error);
        var result = GenerationJobResult.FromJson(done.Result!.Value);
        Assert.Equal("Euler a", result.Sampler);
        var png = ImageCodec.Load(Path.Combine(data, Assert.Single(result.Images).File));
        var parameters = png.Text["parameters"];
        Assert.Contains("Steps: 1,", parameters, StringComparison.Ordinal);
        Assert.Contains("CFG scale: 1.0,", parameters, StringComparison.Ordinal);
    }

    public void Dispose()
    {
        SqliteConnection.ClearAllPools();
        Directory.Delete(data, recursive: true);
    }
}
