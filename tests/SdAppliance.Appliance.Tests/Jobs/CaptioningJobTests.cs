using System.Text.Json;
using SdAppliance.Appliance.Catalog;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Storage;
using SdAppliance.Formats;
using SdAppliance.Imaging;
using SdAppliance.Onnx.Tagging;
using SdAppliance.Onnx.Tests;

namespace SdAppliance.Appliance.Tests.Jobs;

/// <summary>The captioning job on the tiny WD14 tagger in the data folder's models/taggers/: who may start it, what it writes, what it reports.</summary>
public sealed class CaptioningJobTests : IDisposable
{
    private static readonly Caller Alice = new("alice", IsAdmin: false);
    private static readonly Caller Bob = new("bob", IsAdmin: false);
    private readonly string data = Directory.CreateTempSubdirectory("sdapp-captioning-").FullName;

    public void Dispose() => Directory.Delete(data, recursive: true);

    private async Task<(TestAppliance Appliance, string Dataset)> StartAsync()
    {
        var appliance = await TestAppliance.StartAsync(data, runners: null);
        var folders = appliance.Service<DataFolder>();
        TinyTagger.Write(Path.Combine(folders.Taggers, "tiny"));
        await appliance.Service<DatasetService>().CreateAsync(Alice, "cats", isPrivate: false, CancellationToken.None);
        var dataset = Path.Combine(folders.Datasets, "cats");
        Save(Path.Combine(dataset, "10_red", "a.png"), 255, 0, 0);
        Save(Path.Combine(dataset, "b.png"), 0, 255, 0);
        File.WriteAllText(Path.Combine(dataset, "10_red", "broken.png"), "not a png");
        return (appliance, dataset);
    }

    private static void Save(string path, byte r, byte g, byte b)
    {
        var image = new RgbImage(24, 24, 3);
        for (var i = 0; i < 24 * 24; i++) (image.Pixels[i * 3], image.Pixels[i * 3 + 1], image.Pixels[i * 3 + 2]) = (r, g, b);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        ImageCodec.Save(image, path);
    }

    [Fact]
    public async Task The_owner_captions_a_dataset_and_the_job_reports_each_caption_and_each_skipped_image()
    {
        var (appliance, dataset) = await StartAsync();
        await using var _ = appliance;
        Assert.Equal([new TaggerEntry("tiny", TinyTagger.Tags.Count)], appliance.Service<TaggerCatalog>().List());
        File.WriteAllText(Path.Combine(dataset, "b.txt"), "sks");

        var queued = await appliance.Service<AutoCaptions>().StartAsync(Alice,
            new AutoCaptionRequest("cats", "tiny", UndesiredTags: "dark", Mode: CaptionMode.Append), CancellationToken.None);
        Assert.Equal(JobKind.Captioning, queued.Kind);
        var job = await appliance.WaitAsync(queued.Id);
        Assert.True(job.State == JobState.Completed, job.Error);

        Assert.Equal("red, simple background, ^_^", File.ReadAllText(Path.Combine(dataset, "10_red", "a.txt")));
        Assert.Equal("sks, green, hatsune miku (vocaloid), simple background, ^_^", File.ReadAllText(Path.Combine(dataset, "b.txt")));
        var result = job.Result!.Value;
        Assert.Equal(3, result.GetProperty("images").GetInt32());
        Assert.Equal(["10_red/a.png", "b.png"], result.GetProperty("written").EnumerateArray().Select(w => w.GetProperty("image").GetString()));
        var skipped = Assert.Single(result.GetProperty("skipped").EnumerateArray());
        Assert.Equal("10_red/broken.png", skipped.GetProperty("image").GetString());
        Assert.StartsWith("not a PNG, JPEG or WebP image", skipped.GetProperty("reason").GetString());
        Assert.Equal((3, 3), (job.Step, job.TotalSteps));

        using var timeout = new CancellationTokenSource(TestAppliance.Patience);
        var logs = new List<string>();
        await foreach (var e in appliance.Jobs.EventsAsync(job.Id, 0, timeout.Token))
            if (e.Type == JobEventTypes.Log) logs.Add(e.Message!);
        Assert.Contains(logs, l => l.StartsWith("skipped 10_red/broken.png: not a PNG", StringComparison.Ordinal));

        // The dataset's own view shows the captions.
        var images = await appliance.Service<DatasetService>().ListImagesAsync(Alice, "cats", CancellationToken.None);
        Assert.Equal("red, simple background, ^_^", images!.Single(i => i.Path == "10_red/a.png").Caption);
    }

    [Fact]
    public async Task Another_user_an_unknown_tagger_or_a_bad_threshold_is_refused_before_anything_runs()
    {
        var (appliance, dataset) = await StartAsync();
        await using var _ = appliance;
        var captions = appliance.Service<AutoCaptions>();

        await Assert.ThrowsAsync<NotPermittedException>(() => captions.StartAsync(Bob, new AutoCaptionRequest("cats", "tiny"), CancellationToken.None));
        await Assert.ThrowsAsync<DatasetNotFoundException>(() => captions.StartAsync(Alice, new AutoCaptionRequest("dogs", "tiny"), CancellationToken.None));
        var tagger = await Assert.ThrowsAnyAsync<UserInputException>(() => captions.StartAsync(Alice, new AutoCaptionRequest("cats", "wd-vit"), CancellationToken.None));
        Assert.Equal(("tagger", "there is no tagger 'wd-vit'"), (tagger.Subject, tagger.Problem));
        var threshold = await Assert.ThrowsAnyAsync<UserInputException>(() => captions.StartAsync(Alice, new AutoCaptionRequest("cats", "tiny", Threshold: 2), CancellationToken.None));
        Assert.Equal("threshold", threshold.Subject);
        var mode = await Assert.ThrowsAnyAsync<UserInputException>(() => appliance.SubmitAsync(JobKind.Captioning, "alice", new { dataset = "cats", tagger = "tiny", mode = "replace" }));
        Assert.Equal("mode", mode.Subject);
        Assert.Empty(await appliance.Jobs.ListAsync(new Caller("admin", IsAdmin: true), null, CancellationToken.None));

        // Through the bare jobs route the dataset's owner is checked when the job starts: bob's job fails, writing nothing.
        var bobs = await appliance.WaitAsync((await appliance.SubmitAsync(JobKind.Captioning, "bob", new { dataset = "cats", tagger = "tiny" })).Id);
        Assert.Equal(JobState.Failed, bobs.State);
        Assert.Contains("belongs to another user", bobs.Error);
        Assert.Empty(Directory.EnumerateFiles(dataset, "*.txt", SearchOption.AllDirectories));
        var json = JsonSerializer.Serialize(bobs.Request);
        Assert.Contains("\"dataset\":\"cats\"", json);
    }
}
