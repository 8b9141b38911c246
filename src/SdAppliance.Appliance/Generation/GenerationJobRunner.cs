using System.Globalization;
using System.Text.Json;
using SdAppliance.Appliance.Catalog;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Storage;
using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Imaging;
using SdAppliance.Torch;

namespace SdAppliance.Appliance.Generation;

/// <summary>
/// Runs generation jobs as <c>sdapp generate</c> does (the same pipeline, model hash and infotext), batch after batch
/// (<see cref="GenerationJobRequest.NIter"/>): a <c>step</c> event per sampler step, an <c>image</c> event per PNG, each
/// PNG (with its <c>parameters</c> text) written to <c>outputs/yyyy-MM-dd/</c> under a temporary name and renamed, and
/// recorded as its owner's.
/// </summary>
public sealed class GenerationJobRunner(DataFolder data, Ownership ownership, GenerationService generation) : IJobRunner
{
    public JobKind Kind => JobKind.Generation;

    public bool UsesDevice => true;

    public void Check(JsonElement request)
    {
        GenerationJobRequest parsed;
        try
        {
            parsed = GenerationJobRequest.FromJson(request);
        }
        catch (JsonException e)
        {
            throw new GenerationRequestException(e.Path is { Length: > 2 } path ? path[2..] : "request", $"cannot be read: {e.Message}");
        }
        generation.Check(parsed);
    }

    public async Task<JsonElement?> RunAsync(JobContext context, CancellationToken cancellationToken)
    {
        var request = GenerationJobRequest.FromJson(context.Job.Request);
        // The job sees the catalog as its owner does (their private models included).
        var owner = new Caller(context.Job.OwnerId, IsAdmin: false);
        var model = await generation.ModelForAsync(owner, request, cancellationToken);
        var batch = await generation.ToPipelineRequestAsync(owner, request, generation.LoadInitImage(request), cancellationToken);
        // The sampler loop is synchronous: it runs on its own thread and checks the token between steps.
        var result = await Task.Factory.StartNew(() => Run(context, request, batch, model, cancellationToken), cancellationToken,
            TaskCreationOptions.LongRunning, TaskScheduler.Default);
        foreach (var image in result.Images)
            await ownership.RecordAsync(StorageArea.Outputs, Path.GetRelativePath(data.Outputs, Path.Combine(data.FullPath, image.File)).Replace('\\', '/'),
                context.Job.OwnerId, isPrivate: false, CancellationToken.None);
        return result.ToJson();
    }

    private GenerationJobResult Run(JobContext context, GenerationJobRequest request, GenerationRequest batch, ModelEntry entry, CancellationToken cancellationToken)
    {
        var model = generation.Load(entry, Device.Parse(context.Device), cancellationToken);
        var width = batch.Width ?? batch.InitImage?.Width ?? model.DefaultResolution;
        var height = batch.Height ?? batch.InitImage?.Height ?? model.DefaultResolution;
        Engine.UseThreads(model.UnetThreadDemand(2L * batch.BatchSize, height, width));
        var pipeline = new StableDiffusionPipeline(model, generation.AdapterFolders) { ModelHash = generation.ModelHash(entry) };

        var folder = data.OutputsOn(DateTime.UtcNow);
        Directory.CreateDirectory(folder);
        var files = new List<GeneratedFile>();
        var warnings = new List<string>();
        var seed = batch.Seed;
        for (var iteration = 0; iteration < request.NIter; iteration++)
        {
            // Image i of the job has seed + i, over every batch (A1111's all_seeds); a random seed is drawn by the first batch.
            var done = iteration;
            var images = pipeline.Generate(batch with { Seed = seed < 0 ? -1 : seed + iteration * batch.BatchSize }, new Progress(p => context.Publish(
                new JobEvent(0, default, JobEventTypes.Step) { Step = (long)done * p.TotalSteps + p.Step, TotalSteps = (long)request.NIter * p.TotalSteps })), cancellationToken);
            if (seed < 0) seed = images[0].Seed;
            foreach (var image in images)
            {
                var path = Path.Combine(folder, string.Create(CultureInfo.InvariantCulture, $"{context.Job.Id:N}-{files.Count:00}-{image.Seed}.png"));
                ImageCodec.Save(image.Image, path, ImageEncodeOptions.Png);
                var file = Path.GetRelativePath(data.FullPath, path).Replace('\\', '/');
                files.Add(new GeneratedFile(file, image.Seed, image.Parameters));
                context.Publish(new JobEvent(0, default, JobEventTypes.Image) { Image = file });
            }
            warnings.AddRange(images.Warnings.Select(w => w.ToString()).Except(warnings));
        }
        return new GenerationJobResult(files, width, height, model.Name, pipeline.ModelHash, batch.Sampler, warnings);
    }

    /// <summary>Reports on the sampler's thread, in order (<see cref="Progress{T}"/> would post to the thread pool).</summary>
    private sealed class Progress(Action<GenerationProgress> report) : IProgress<GenerationProgress>
    {
        public void Report(GenerationProgress value) => report(value);
    }
}
