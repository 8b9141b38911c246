using System.Text.Json;
using Bunit;
using Microsoft.Extensions.DependencyInjection;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Storage;
using SdAppliance.Onnx.Tests;
using SdAppliance.Web.Components.Pages.Datasets;

namespace SdAppliance.Web.Tests.Ui;

/// <summary>The dataset page's auto-caption panel: with no tagger it says where one goes; with one it queues the job its fields describe.</summary>
public sealed class AutoCaptionPanelTests : UiAppliance
{
    [Fact]
    public async Task Without_a_tagger_it_says_where_to_put_one()
    {
        var alice = await UserAsync("alice");
        SignIn(alice);
        await Ctx.Services.GetRequiredService<DatasetService>().CreateAsync(new Caller(alice.Id, false), "cats", false, None);
        var cut = Ctx.Render<AutoCaptionPanel>(p => p.Add(c => c.Dataset, "cats"));
        Assert.Contains("models/taggers/NAME/", cut.Find("[data-testid='no-taggers']").TextContent, StringComparison.Ordinal);
        Assert.Empty(cut.FindAll("[data-testid='caption-start']"));
    }

    [Fact]
    public async Task Auto_caption_queues_a_captioning_job_with_the_thresholds_and_the_mode()
    {
        var alice = await UserAsync("alice");
        SignIn(alice);
        TinyTagger.Write(Path.Combine(Ctx.Services.GetRequiredService<DataFolder>().Taggers, "tiny"));
        await Ctx.Services.GetRequiredService<DatasetService>().CreateAsync(new Caller(alice.Id, false), "cats", false, None);
        var cut = Ctx.Render<AutoCaptionPanel>(p => p.Add(c => c.Dataset, "cats"));
        Assert.Contains("tiny", cut.Find("[data-testid='caption-tagger']").OuterHtml + cut.Markup, StringComparison.Ordinal);

        await Input(cut, "caption-threshold").ChangeAsync(new() { Value = "0.5" });
        await Input(cut, "caption-undesired").InputAsync(new() { Value = "simple_background" });
        await cut.Find("[data-testid='caption-start']").ClickAsync(new());

        cut.WaitForAssertion(() => Assert.Contains("queued", cut.Find("[data-testid='caption-job-state']").TextContent, StringComparison.Ordinal));
        var job = Assert.Single(await Ctx.Services.GetRequiredService<JobService>().ListAsync(new Caller(alice.Id, false), null, None));
        Assert.Equal(JobKind.Captioning, job.Kind);
        var request = job.Request;
        Assert.Equal(("cats", "tiny", 0.5, 0.85, "simple_background", "skip"),
            (request.GetProperty("dataset").GetString(), request.GetProperty("tagger").GetString(), request.GetProperty("threshold").GetDouble(),
             request.GetProperty("character_threshold").GetDouble(), request.GetProperty("undesired_tags").GetString(), request.GetProperty("mode").GetString()));
        Assert.Equal(JsonValueKind.False, request.GetProperty("rating_tag").ValueKind);
    }

    [Fact]
    public async Task When_the_job_ends_the_panel_shows_the_captions_written_and_the_images_skipped_with_their_reasons()
    {
        var alice = await UserAsync("alice");
        SignIn(alice);
        var folders = Ctx.Services.GetRequiredService<DataFolder>();
        TinyTagger.Write(Path.Combine(folders.Taggers, "tiny"));
        await Ctx.Services.GetRequiredService<DatasetService>().CreateAsync(new Caller(alice.Id, false), "cats", false, None);
        var image = new Imaging.RgbImage(24, 24, 3);
        Imaging.ImageCodec.Save(image, Path.Combine(folders.Datasets, "cats", "black.png"));
        File.WriteAllText(Path.Combine(folders.Datasets, "cats", "broken.png"), "not a png");
        // The UI's appliance runs no jobs; this scheduler runs the captioning job for real.
        var s = Ctx.Services;
        await using var scheduler = new JobScheduler(s.GetRequiredService<JobService>(),
            [new CaptioningJobRunner(folders, s.GetRequiredService<Appliance.Catalog.TaggerCatalog>(), s.GetRequiredService<Ownership>(),
                s.GetRequiredService<Microsoft.EntityFrameworkCore.IDbContextFactory<Appliance.Persistence.ApplianceDb>>())],
            s.GetRequiredService<Appliance.ApplianceOptions>(), Microsoft.Extensions.Logging.Abstractions.NullLogger<JobScheduler>.Instance);
        await scheduler.StartAsync(None);
        var captioned = 0;
        var cut = Ctx.Render<AutoCaptionPanel>(p => p.Add(c => c.Dataset, "cats").Add(c => c.OnCaptioned, () => captioned++));

        await cut.Find("[data-testid='caption-start']").ClickAsync(new());

        cut.WaitForAssertion(() => Assert.Equal("1 caption written, 1 image skipped", cut.Find("[data-testid='caption-result']").TextContent.Trim()), TimeSpan.FromMinutes(1));
        Assert.Contains("broken.png", cut.Find("[data-testid='caption-skipped']").TextContent, StringComparison.Ordinal);
        Assert.Contains("not a PNG, JPEG or WebP image", cut.Find("[data-testid='caption-skipped']").TextContent, StringComparison.Ordinal);
        Assert.Equal("completed", cut.Find("[data-testid='caption-job-state']").TextContent.Trim());
        Assert.Equal(1, captioned);
        Assert.Equal("dark, simple background, ^_^", File.ReadAllText(Path.Combine(folders.Datasets, "cats", "black.txt")));
    }

    private static AngleSharp.Dom.IElement Input(IRenderedComponent<AutoCaptionPanel> cut, string testId) =>
        cut.Find($"[data-testid='{testId}'] input, input[data-testid='{testId}']");
}
