using SdAppliance.Appliance.Jobs;
using SdAppliance.Formats;

namespace SdAppliance.Appliance.Tests.Jobs;

/// <summary>The class-image and conversion jobs doing their real work on the demo model.</summary>
[Collection(EngineCollection.Name)]
public sealed class WorkJobTests : IDisposable
{
    private readonly string data = Directory.CreateTempSubdirectory("sdapp-work-jobs-").FullName;

    [Fact]
    public async Task A_class_images_job_generates_what_the_concept_lacks_and_publishes_each_image()
    {
        TinyLora.MakeDataset(data);
        await using var appliance = await TestAppliance.StartAsync(data, [new ClassImagesJobRunner(TestAppliance.PathsFor(data))]);
        var request = new Dictionary<string, object>
        {
            ["method"] = "dreambooth", ["data"] = "datasets/squares", ["instance_prompt"] = "a sks square", ["class_prompt"] = "a square",
            ["class_data"] = "datasets/class", ["num_class_images"] = 2, ["resolution"] = 64, ["sample_steps"] = 2,
        };
        var job = await appliance.WaitAsync((await appliance.SubmitAsync(JobKind.ClassImages, "alice", request)).Id);
        Assert.True(job.State == JobState.Completed, job.Error);
        Assert.Equal(2, job.Result!.Value.GetProperty("generated").GetInt32());
        Assert.Equal(["class-00000.png", "class-00001.png"],
            Directory.EnumerateFiles(Path.Combine(data, "datasets", "class"), "*.png").Select(Path.GetFileName).Order(StringComparer.Ordinal));

        using var timeout = new CancellationTokenSource(TestAppliance.Patience);
        var images = new List<string>();
        await foreach (var e in appliance.Jobs.EventsAsync(job.Id, 0, timeout.Token))
            if (e.Type == JobEventTypes.Image) images.Add(e.Image!);
        Assert.Equal(["datasets/class/class-00000.png", "datasets/class/class-00001.png"], images);

        // Nothing is missing any more: a second job generates nothing.
        var again = await appliance.WaitAsync((await appliance.SubmitAsync(JobKind.ClassImages, "alice", request)).Id);
        Assert.Equal(0, again.Result!.Value.GetProperty("generated").GetInt32());
    }

    [Fact]
    public async Task A_conversion_job_writes_the_demo_model_as_one_safetensors_file_in_the_data_folder()
    {
        await using var appliance = await TestAppliance.StartAsync(data, [new ConversionJobRunner(TestAppliance.PathsFor(data))]);
        var job = await appliance.WaitAsync((await appliance.SubmitAsync(JobKind.Conversion, "alice",
            new { input = TestAppliance.DemoModel, output = "models/demo.safetensors", half = true })).Id);
        Assert.True(job.State == JobState.Completed, job.Error);
        Assert.Equal("models/demo.safetensors", job.Result!.Value.GetProperty("output").GetString());
        Assert.Equal("safetensors", job.Result!.Value.GetProperty("format").GetString());
        using var file = TensorFile.Open(Path.Combine(data, "models", "demo.safetensors"));
        Assert.Equal(job.Result!.Value.GetProperty("tensors").GetInt32(), file.Names.Count());

        // Refused when submitted, naming the field: nothing is queued.
        var outside = await Assert.ThrowsAsync<UserInputException>(() => appliance.SubmitAsync(JobKind.Conversion, "alice", new { input = "/etc", output = "x.ckpt" }));
        Assert.Equal("input", outside.Subject);
        Assert.Contains("'/etc'", outside.Message, StringComparison.Ordinal);
        var format = await Assert.ThrowsAsync<UserInputException>(() => appliance.SubmitAsync(JobKind.Conversion, "alice", new { input = TestAppliance.DemoModel, output = "x", to = "onnx" }));
        Assert.StartsWith("to: 'onnx' is not one of diffusers, safetensors, ckpt", format.Message, StringComparison.Ordinal);
        Assert.Single(await appliance.Jobs.ListAsync(new Caller("alice", IsAdmin: false), null, CancellationToken.None));
    }

    public void Dispose() => Directory.Delete(data, recursive: true);
}
