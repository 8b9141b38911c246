using SdAppliance.Appliance.Catalog;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Storage;
using SdAppliance.Formats;

namespace SdAppliance.Appliance.Tests.Jobs;

/// <summary>The Models page's ONNX export: a conversion job whose folder lands in <c>models/</c> as a base model of its owner's.</summary>
[Collection(EngineCollection.Name)]
public sealed class OnnxExportJobTests : IDisposable
{
    private static readonly Caller Alice = new("alice", IsAdmin: false), Bob = new("bob", IsAdmin: false);
    private readonly string data = Directory.CreateTempSubdirectory("sdapp-onnx-jobs-").FullName;
    private readonly CancellationToken none = CancellationToken.None;

    public void Dispose() => Directory.Delete(data, recursive: true);

    [Fact]
    public void Base_models_offer_the_ONNX_export_and_networks_do_not()
    {
        Assert.Contains(ModelExports.For(ModelKind.Checkpoint), e => e.Name == ConversionJobRunner.Onnx && e.Label == "Export to ONNX");
        Assert.DoesNotContain(ModelExports.For(ModelKind.Lora), e => e.Name == ConversionJobRunner.Onnx);
        Assert.Equal(["optimum", "diffusers"], ModelExports.OnnxLayouts);
    }

    [Fact]
    public async Task An_ONNX_export_lands_in_the_base_models_as_its_owners_model_under_a_free_name()
    {
        await using var appliance = await TestAppliance.StartAsync(data, runners: null);
        var exports = appliance.Service<ModelExports>();

        var job = await appliance.WaitAsync((await exports.SubmitOnnxAsync(Alice, "demo", new OnnxExportChoices(), none)).Id);
        Assert.True(job.State == JobState.Completed, job.Error);
        Assert.Equal("models/demo-onnx", job.Result!.Value.GetProperty("output").GetString());
        Assert.Equal("optimum", job.Result.Value.GetProperty("layout").GetString());
        Assert.True(File.Exists(Path.Combine(data, "models", "demo-onnx", "unet", "model.onnx")));
        Assert.Equal(job.TotalSteps, job.Step);

        var listed = await appliance.Service<ModelCatalog>().ListAsync(Alice, ModelKind.Checkpoint, none);
        var entry = Assert.Single(listed, e => e.RelativePath == "demo-onnx");
        Assert.Equal("alice", entry.OwnerId);
        var row = Assert.Single(await exports.ListAsync(Alice, none));
        Assert.False(row.CanDownload);
        Assert.Equal("demo-onnx", row.Model);

        // A second export of the same model does not replace the first.
        var again = await appliance.WaitAsync((await exports.SubmitOnnxAsync(Alice, "demo", new OnnxExportChoices(), none)).Id);
        Assert.Equal("models/demo-onnx-2", again.Result!.Value.GetProperty("output").GetString());
    }

    [Fact]
    public async Task Choices_that_are_not_names_and_LoRAs_the_caller_cannot_see_are_refused_when_submitted()
    {
        await using var appliance = await TestAppliance.StartAsync(data, runners: null);
        var exports = appliance.Service<ModelExports>();

        var layout = await Assert.ThrowsAsync<UserInputException>(() => exports.SubmitOnnxAsync(Alice, "demo", new OnnxExportChoices(Layout: "olive"), none));
        Assert.Equal("layout", layout.Subject);
        Assert.Contains("'olive' is not one of optimum, diffusers", layout.Message);
        var attention = await Assert.ThrowsAsync<UserInputException>(() => exports.SubmitOnnxAsync(Alice, "demo", new OnnxExportChoices(Attention: "flash"), none));
        Assert.Equal("attention", attention.Subject);
        var lora = await Assert.ThrowsAsync<UserInputException>(() =>
            exports.SubmitOnnxAsync(Alice, "demo", new OnnxExportChoices(Loras: [new ModelExportLora("nowhere.safetensors", 0.7)]), none));
        Assert.Equal("loras", lora.Subject);
        var model = await Assert.ThrowsAsync<UserInputException>(() => exports.SubmitOnnxAsync(Bob, "nothing", new OnnxExportChoices(), none));
        Assert.Equal("model", model.Subject);
        // Through the raw request (the REST API): the export chooses its own place in models/.
        var output = await Assert.ThrowsAsync<UserInputException>(() =>
            appliance.SubmitAsync(JobKind.Conversion, "alice", new { input = TestAppliance.DemoModel, export = "onnx", output = "models/mine" }));
        Assert.Equal("output", output.Subject);
        Assert.Empty(await appliance.Jobs.ListAsync(Alice, null, none));
    }

    [Fact]
    public async Task A_LoRA_that_matches_no_layer_fails_the_job_and_nothing_lands_in_the_models()
    {
        var lora = Path.Combine(data, "models", "lora", "elsewhere.safetensors");
        Directory.CreateDirectory(Path.GetDirectoryName(lora)!);
        SafetensorsFile.Write(lora,
        [
            new SafetensorsTensor("lora_unet_no_such_layer.lora_down.weight", SafetensorsDType.F32, [2, 4], new byte[2 * 4 * 4]),
            new SafetensorsTensor("lora_unet_no_such_layer.lora_up.weight", SafetensorsDType.F32, [4, 2], new byte[4 * 2 * 4]),
        ]);
        await using var appliance = await TestAppliance.StartAsync(data, runners: null);
        var before = Directory.GetFileSystemEntries(Path.Combine(data, "models")).Order(StringComparer.Ordinal).ToList();

        // Through the raw job request, as the REST API sends it.
        var job = await appliance.WaitAsync((await appliance.SubmitAsync(JobKind.Conversion, "alice", new
        {
            input = TestAppliance.DemoModel, export = "onnx", layout = "diffusers", half = true,
            loras = new[] { new { path = "models/lora/elsewhere.safetensors", weight = 0.7 } },
        })).Id);

        Assert.Equal(JobState.Failed, job.State);
        Assert.Contains("matches no layer of the model", job.Error);
        Assert.Equal(before, Directory.GetFileSystemEntries(Path.Combine(data, "models")).Order(StringComparer.Ordinal));
    }
}
