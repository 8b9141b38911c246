using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using SdAppliance.Appliance.Generation;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Tests.Jobs;
using SdAppliance.Imaging;

namespace SdAppliance.Appliance.Tests.Generation;

/// <summary>A running generation's previews: events with a PNG in the job's folder, none at the last step, none when turned off.</summary>
public sealed class GenerationPreviewTests : IDisposable
{
    private readonly string data = Directory.CreateTempSubdirectory("sdapp-preview-").FullName;

    private static GenerationJobRequest Request(long seed) => new() { Prompt = "a red circle", Steps = 4, Seed = seed, Sampler = "Euler" };

    private async Task<(JobView Job, List<JobEvent> Events)> GenerateAsync(TimeSpan? interval, long seed)
    {
        await using var appliance = await TestAppliance.StartAsync(Path.Combine(data, seed.ToString(System.Globalization.CultureInfo.InvariantCulture)), runners: null,
            configure: s => s.Replace(ServiceDescriptor.Singleton(new GenerationOptions { PreviewInterval = interval })));
        var job = await appliance.SubmitAsync(JobKind.Generation, "alice", Request(seed).ToJson());
        var done = await appliance.WaitAsync(job.Id);
        Assert.Equal(JobState.Completed, done.State);
        var events = new List<JobEvent>();
        using var timeout = new CancellationTokenSource(TestAppliance.Patience);
        await foreach (var e in appliance.Jobs.EventsAsync(job.Id, 0, timeout.Token)) events.Add(e);
        return (done, events);
    }

    [Fact]
    public async Task Every_step_but_the_last_has_a_preview_of_the_pictures_size_in_the_jobs_folder()
    {
        var (job, events) = await GenerateAsync(TimeSpan.Zero, 11);
        var previews = events.Where(e => e.Type == JobEventTypes.Preview).ToList();
        Assert.Equal([1L, 2L, 3L], previews.Select(p => p.Step!.Value));
        foreach (var preview in previews)
        {
            Assert.StartsWith(job.Folder + "/", preview.Image, StringComparison.Ordinal);
            var image = ImageCodec.Load(Path.Combine(data, "11", preview.Image!));
            // The demo model's 8x8 latent is previewed through its VAE: the picture's 64x64.
            Assert.Equal((64, 64), (image.Width, image.Height));
        }
        // Each preview follows its step's event.
        Assert.All(previews, p => Assert.Contains(events, e => e.Type == JobEventTypes.Step && e.Step == p.Step && e.Sequence < p.Sequence));
        Assert.Single(events, e => e.Type == JobEventTypes.Image);
    }

    [Fact]
    public async Task Without_an_interval_no_preview_is_drawn()
    {
        var (_, events) = await GenerateAsync(null, 12);
        Assert.DoesNotContain(events, e => e.Type == JobEventTypes.Preview);
        Assert.Equal(4, events.Count(e => e.Type == JobEventTypes.Step));
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
