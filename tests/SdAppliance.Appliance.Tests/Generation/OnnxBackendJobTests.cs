using SdAppliance.Appliance.Catalog;
using SdAppliance.Appliance.Generation;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Tests.Jobs;
using SdAppliance.Formats;
using SdAppliance.Onnx.Tests;

namespace SdAppliance.Appliance.Tests.Generation;

/// <summary>An ONNX export dropped into models/: listed as a model of format onnx, generated with on ONNX Runtime.</summary>
public sealed class OnnxBackendJobTests : IDisposable
{
    private static readonly Caller Alice = new("alice", IsAdmin: false);
    private readonly string data = Directory.CreateTempSubdirectory("sdapp-onnx-jobs-").FullName;

    [Fact]
    public async Task An_export_is_a_model_that_generation_runs_on_onnx_runtime()
    {
        ToyOnnxExport.Write(Path.Combine(data, "models", "toy"), ToyLayout.Optimum);
        await using var appliance = await TestAppliance.StartAsync(data, runners: null);
        var catalog = appliance.Service<ModelCatalog>();
        var toy = Assert.Single(await catalog.ListAsync(Alice, ModelKind.Checkpoint, CancellationToken.None), m => m.Name == "toy");
        Assert.Null(toy.Problem);
        Assert.Equal("onnx", toy.Format);
        Assert.Equal(["onnx"], toy.Backends);
        Assert.Equal("SD 1.x", toy.Family);
        var demo = Assert.Single(await catalog.ListAsync(Alice, ModelKind.Checkpoint, CancellationToken.None), m => m.IsDemo);
        Assert.Equal("diffusers", demo.Format);
        Assert.Equal(["libtorch"], demo.Backends);
        // An export offers no further exports (its graphs are not weights our writers read); the demo model does.
        Assert.Empty(ModelExports.For(toy));
        Assert.Contains(ModelExports.For(demo), e => e.Name == ConversionJobRunner.Onnx);

        var request = new GenerationJobRequest { Model = "toy", Prompt = "a red circle", Steps = 3, Seed = 5, Sampler = "DDIM", Width = 64, Height = 64 };
        var job = await appliance.SubmitAsync(JobKind.Generation, "alice", request.ToJson());
        var done = await appliance.WaitAsync(job.Id);
        Assert.True(done.State == JobState.Completed, done.Error);
        var result = GenerationJobResult.FromJson(done.Result!.Value);
        Assert.Equal("onnx", result.Backend);
        Assert.Equal("the model is an ONNX export only", result.BackendReason);
        Assert.Equal("toy", result.Model);
        Assert.Single(result.Images);

        // An engine the model cannot run on is refused before the job is queued, naming the field.
        var generation = appliance.Service<GenerationService>();
        var refused = await Assert.ThrowsAnyAsync<UserInputException>(() => generation.PrepareAsync(Alice, request with { Backend = "libtorch" }, null, CancellationToken.None));
        Assert.Equal("backend", refused.Subject);
        var onDemo = await Assert.ThrowsAnyAsync<UserInputException>(() => generation.PrepareAsync(Alice, request with { Model = null, Backend = "onnx" }, null, CancellationToken.None));
        Assert.Contains("no ONNX export", onDemo.Message);
        Assert.ThrowsAny<UserInputException>(() => generation.Check(request with { Backend = "tensorrt" }));
    }

    [Fact]
    public async Task A_vae_apart_from_the_model_runs_on_libtorch_and_an_export_only_model_refuses_it()
    {
        ToyOnnxExport.Write(Path.Combine(data, "models", "toy"), ToyLayout.Optimum);
        Directory.CreateDirectory(Path.Combine(data, "models", "vae"));
        // The catalog lists the file by name; its weights are read only when a model loads it.
        File.WriteAllBytes(Path.Combine(data, "models", "vae", "other.safetensors"), [0]);
        await using var appliance = await TestAppliance.StartAsync(data, runners: null);
        var generation = appliance.Service<GenerationService>();
        var request = new GenerationJobRequest { Model = "toy", Prompt = "a red circle", Steps = 3, Seed = 5, Sampler = "DDIM", Width = 64, Height = 64, Vae = "other.safetensors" };
        var refused = await Assert.ThrowsAnyAsync<UserInputException>(() => generation.PrepareAsync(Alice, request, null, CancellationToken.None));
        Assert.Equal("vae", refused.Subject);
        Assert.Contains("vae_decoder", refused.Message, StringComparison.Ordinal);
        // Its own VAE (Automatic) is what an export has.
        await generation.PrepareAsync(Alice, request with { Vae = "Automatic" }, null, CancellationToken.None);
        var unknown = await Assert.ThrowsAnyAsync<UserInputException>(() => generation.PrepareAsync(Alice, request with { Model = null, Vae = "missing.pt" }, null, CancellationToken.None));
        Assert.Equal("vae", unknown.Subject);
        Assert.Contains("other.safetensors", unknown.Message, StringComparison.Ordinal);

        // A folder with both an export and libtorch weights: auto would take ONNX Runtime, but the VAE makes it libtorch.
        var both = Path.Combine(data, "both");
        ToyOnnxExport.Write(both, ToyLayout.Optimum);
        File.WriteAllBytes(Path.Combine(both, "unet", "diffusion_pytorch_model.safetensors"), [0]);
        var entry = new ModelEntry(ModelKind.Checkpoint, "both", "both", "both", both, 0, DateTime.UtcNow, "SD 1.x", "epsilon", null, null,
            new Dictionary<string, string>(), null, null, null, false, false);
        var pipelineRequest = new Diffusion.Pipelines.GenerationRequest { Prompt = "a red circle" };
        Assert.Equal(Onnx.Runtime.InferenceBackend.OnnxRuntime, GenerationService.ChooseBackend(entry, request with { Model = "both" }, pipelineRequest).Backend);
        var withVae = GenerationService.ChooseBackend(entry, request with { Model = "both" }, pipelineRequest, separateVae: true);
        Assert.Equal(Onnx.Runtime.InferenceBackend.Libtorch, withVae.Backend);
        Assert.Contains("VAE", withVae.Reason, StringComparison.Ordinal);
        var asked = Assert.ThrowsAny<UserInputException>(() => GenerationService.ChooseBackend(entry, request with { Model = "both", Backend = "onnx" }, pipelineRequest, separateVae: true));
        Assert.Equal("vae", asked.Subject);
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
