using System.IO.Compression;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Storage;
using SdAppliance.Formats;
using SdAppliance.Formats.Adapters;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;
using SdAppliance.Training.Exports;
using SdAppliance.Training.Networks;

namespace SdAppliance.Appliance.Tests.Jobs;

/// <summary>The Models page's exports: conversion jobs that write into their own folder and end in a download.</summary>
[Collection(EngineCollection.Name)]
public sealed class ExportJobTests : IDisposable
{
    private static readonly Caller Alice = new("alice", IsAdmin: false), Bob = new("bob", IsAdmin: false), Admin = new("root", IsAdmin: true);
    private readonly string data = Directory.CreateTempSubdirectory("sdapp-export-jobs-").FullName;
    private readonly CancellationToken none = CancellationToken.None;

    private JobDownloads Downloads(TestAppliance appliance) => new(appliance.Jobs, new DataFolder(data, TestAppliance.RepositoryRoot));

    [Fact]
    public async Task An_fp16_export_writes_a_float16_file_in_the_jobs_folder_that_only_its_owner_and_admins_download()
    {
        await using var appliance = await TestAppliance.StartAsync(data, [new ConversionJobRunner(TestAppliance.PathsFor(data))]);
        var job = await appliance.WaitAsync((await appliance.SubmitAsync(JobKind.Conversion, "alice", new { input = TestAppliance.DemoModel, export = "fp16" })).Id);
        Assert.True(job.State == JobState.Completed, job.Error);
        Assert.Equal($"{job.Folder}/demo-fp16.safetensors", job.Result!.Value.GetProperty("output").GetString());

        var download = await Downloads(appliance).FindAsync(Alice, job.Id, none);
        Assert.NotNull(download);
        Assert.Equal("demo-fp16.safetensors", download.FileName);
        using (var file = SafetensorsFile.Open(download.Path))
        {
            Assert.NotEmpty(file.Tensors);
            Assert.All(file.Tensors, t => Assert.True(t.DType is SafetensorsDType.F16 or SafetensorsDType.I64 or SafetensorsDType.I32, $"{t.Name}: {t.DType}"));
        }
        Assert.NotNull(await Downloads(appliance).FindAsync(Admin, job.Id, none));
        Assert.Null(await Downloads(appliance).FindAsync(Bob, job.Id, none));
        Assert.Null(await Downloads(appliance).FindAsync(Alice, Guid.NewGuid(), none));
    }

    [Fact]
    public async Task A_diffusers_export_is_downloaded_as_a_zip_of_the_folder()
    {
        await using var appliance = await TestAppliance.StartAsync(data, [new ConversionJobRunner(TestAppliance.PathsFor(data))]);
        var demoFile = Path.Combine(TestAppliance.DemoModel, "demo.safetensors");
        var job = await appliance.WaitAsync((await appliance.SubmitAsync(JobKind.Conversion, "alice", new { input = demoFile, export = "diffusers", config = TestAppliance.DemoModel })).Id);
        Assert.True(job.State == JobState.Completed, job.Error);

        var download = await Downloads(appliance).FindAsync(Alice, job.Id, none);
        Assert.Equal("demo-diffusers.zip", download!.FileName);
        Assert.Equal("application/zip", download.ContentType);
        using var zip = ZipFile.OpenRead(download.Path);
        Assert.Contains(zip.Entries, e => e.FullName == "demo-diffusers/model_index.json");
        Assert.Contains(zip.Entries, e => e.FullName.StartsWith("demo-diffusers/unet/", StringComparison.Ordinal));
        // Made once: a second download is the same file.
        var written = File.GetLastWriteTimeUtc(download.Path);
        Assert.Equal(written, File.GetLastWriteTimeUtc((await Downloads(appliance).FindAsync(Alice, job.Id, none))!.Path));
    }

    [Fact]
    public async Task An_embedding_is_exported_as_A1111s_pt_with_its_vectors()
    {
        var embedding = Path.Combine(data, "models", "embeddings", "inkstyle.safetensors");
        Directory.CreateDirectory(Path.GetDirectoryName(embedding)!);
        var vectors = new byte[2 * 768 * 4];
        for (var i = 0; i < vectors.Length; i += 4) BitConverter.TryWriteBytes(vectors.AsSpan(i), i / 4 * 0.001f);
        TextualInversionFile.WriteSafetensors(embedding, vectors, [2, 768]);

        await using var appliance = await TestAppliance.StartAsync(data, [new ConversionJobRunner(TestAppliance.PathsFor(data))]);
        var job = await appliance.WaitAsync((await appliance.SubmitAsync(JobKind.Conversion, "alice", new { input = "models/embeddings/inkstyle.safetensors", export = "a1111_embedding" })).Id);
        Assert.True(job.State == JobState.Completed, job.Error);
        Assert.Equal(2, job.Result!.Value.GetProperty("vectors").GetInt32());
        var download = await Downloads(appliance).FindAsync(Alice, job.Id, none);
        Assert.Equal("inkstyle.pt", download!.FileName);
        using var file = TensorFile.OpenNested(download.Path);
        var (key, _) = TextualInversionFile.FindVectors(file);
        Assert.Equal([2L, 768L], file.Shapes[key]);
    }

    [Fact]
    public async Task A_merge_writes_the_base_model_with_the_LoRA_merged_into_every_module_as_one_file()
    {
        var lora = Path.Combine(data, "models", "lora", "squares.safetensors");
        Directory.CreateDirectory(Path.GetDirectoryName(lora)!);
        int modules;
        using (var model = ModelLoader.Load(TestAppliance.DemoModel))
        using (var network = LoraNetwork.Create(model, new LoraNetworkOptions(NetworkDim: 2, NetworkAlpha: 2, TrainTextEncoder: true), new Generator(3)))
        {
            modules = network.Loras.Count;
            KohyaLoraExport.Save(network, lora, KohyaLoraExport.MinimumMetadata(model, network.Options));
        }

        await using var appliance = await TestAppliance.StartAsync(data, [new ConversionJobRunner(TestAppliance.PathsFor(data))]);
        var job = await appliance.WaitAsync((await appliance.SubmitAsync(JobKind.Conversion, "alice",
            new { input = TestAppliance.DemoModel, export = "merged", lora = "models/lora/squares.safetensors", weight = 0.8, half = true })).Id);
        Assert.True(job.State == JobState.Completed, job.Error);
        Assert.Equal(modules, job.Result!.Value.GetProperty("merged_modules").GetInt32());
        var download = await Downloads(appliance).FindAsync(Alice, job.Id, none);
        Assert.Equal("demo-squares-fp16.safetensors", download!.FileName);
        using var file = SafetensorsFile.Open(download.Path);
        Assert.Contains(file.Tensors, t => t.Name.StartsWith("model.diffusion_model.", StringComparison.Ordinal) && t.DType == SafetensorsDType.F16);
    }

    [Fact]
    public async Task An_unknown_export_and_a_merge_without_a_LoRA_are_refused_when_submitted_naming_the_field()
    {
        await using var appliance = await TestAppliance.StartAsync(data, [new ConversionJobRunner(TestAppliance.PathsFor(data))]);
        var unknown = await Assert.ThrowsAsync<UserInputException>(() => appliance.SubmitAsync(JobKind.Conversion, "alice", new { input = TestAppliance.DemoModel, export = "tflite" }));
        Assert.Equal("export", unknown.Subject);
        Assert.Contains("'tflite' is not one of", unknown.Message, StringComparison.Ordinal);
        var merge = await Assert.ThrowsAsync<UserInputException>(() => appliance.SubmitAsync(JobKind.Conversion, "alice", new { input = TestAppliance.DemoModel, export = "merged" }));
        Assert.Equal("lora", merge.Subject);
        Assert.Empty(await appliance.Jobs.ListAsync(Alice, null, none));
    }

    public void Dispose() => Directory.Delete(data, recursive: true);
}
