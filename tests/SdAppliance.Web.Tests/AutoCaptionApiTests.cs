using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using SdAppliance.Imaging;
using SdAppliance.Onnx.Tests;

namespace SdAppliance.Web.Tests;

/// <summary>The REST side of auto-captioning: the taggers list, a captioning job over the caller's dataset, its refusals.</summary>
public sealed class AutoCaptionApiTests : IDisposable
{
    private readonly ApplianceFactory factory = new();
    private readonly CancellationTokenSource bound = new(TimeSpan.FromMinutes(3));

    public void Dispose()
    {
        bound.Dispose();
        factory.Dispose();
    }

    [Fact]
    public async Task A_dataset_is_captioned_by_a_tagger_of_models_taggers_as_a_job()
    {
        TinyTagger.Write(Path.Combine(factory.DataFolder, "models", "taggers", "tiny"));
        using var client = factory.CreateSignedInClient();
        Assert.Equal(HttpStatusCode.Created, (await client.PostAsJsonAsync("/api/v1/datasets", new { name = "cats" }, bound.Token)).StatusCode);
        var image = new RgbImage(24, 24, 3);
        for (var i = 0; i < 24 * 24; i++) image.Pixels[i * 3] = 255;
        ImageCodec.Save(image, Path.Combine(factory.DataFolder, "datasets", "cats", "red.png"));

        var taggers = await client.GetFromJsonAsync<JsonElement>("/api/v1/taggers", bound.Token);
        var tagger = Assert.Single(taggers.EnumerateArray());
        Assert.Equal(("tiny", 14), (tagger.GetProperty("name").GetString(), tagger.GetProperty("tag_count").GetInt32()));

        var submitted = await client.PostAsJsonAsync("/api/v1/datasets/cats/auto-caption",
            new { tagger = "tiny", threshold = 0.25, undesired_tags = "bright", mode = "overwrite" }, bound.Token);
        Assert.Equal(HttpStatusCode.Created, submitted.StatusCode);
        var job = await submitted.Content.ReadFromJsonAsync<JsonElement>(bound.Token);
        Assert.Equal("captioning", job.GetProperty("kind").GetString());
        var id = job.GetProperty("id").GetString();
        JsonElement done;
        do
        {
            await Task.Delay(100, bound.Token);
            done = await client.GetFromJsonAsync<JsonElement>($"/api/v1/jobs/{id}", bound.Token);
        }
        while (done.GetProperty("state").GetString() is "queued" or "running");
        Assert.Equal("completed", done.GetProperty("state").GetString());
        var written = Assert.Single(done.GetProperty("result").GetProperty("written").EnumerateArray());
        Assert.Equal("red, dark, simple background, ^_^, looking at viewer", written.GetProperty("caption").GetString());

        var caption = await client.GetFromJsonAsync<JsonElement>("/api/v1/datasets/cats/captions/red.png", bound.Token);
        Assert.Equal("red, dark, simple background, ^_^, looking at viewer", caption.GetProperty("caption").GetString());
    }

    [Fact]
    public async Task An_unknown_tagger_or_dataset_is_refused_naming_it()
    {
        using var client = factory.CreateSignedInClient();
        await client.PostAsJsonAsync("/api/v1/datasets", new { name = "cats" }, bound.Token);

        var noTagger = await client.PostAsJsonAsync("/api/v1/datasets/cats/auto-caption", new { tagger = "wd-vit" }, bound.Token);
        Assert.Equal(HttpStatusCode.BadRequest, noTagger.StatusCode);
        var problem = await noTagger.Content.ReadFromJsonAsync<JsonElement>(bound.Token);
        Assert.Equal("tagger", problem.GetProperty("field").GetString());
        Assert.Contains("models/taggers/NAME/", problem.GetProperty("fix").GetString());

        var noDataset = await client.PostAsJsonAsync("/api/v1/datasets/dogs/auto-caption", new { tagger = "wd-vit" }, bound.Token);
        Assert.Equal(HttpStatusCode.NotFound, noDataset.StatusCode);
    }
}
