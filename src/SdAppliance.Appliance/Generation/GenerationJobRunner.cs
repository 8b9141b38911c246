using System.Globalization;
using System.Text.Json;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Formats.Hashing;
using SdAppliance.Imaging;
using SdAppliance.Torch;

namespace SdAppliance.Appliance.Generation;

/// <summary>
/// Runs generation jobs as <c>sdapp generate</c> does (the same pipeline, model hash and infotext), batch after batch
/// (<see cref="GenerationJobRequest.NIter"/>): a <c>step</c> event per sampler step, an <c>image</c> event per PNG, each
/// PNG (with its <c>parameters</c> text) written to <c>outputs/yyyy-MM-dd/</c> under a temporary name and renamed.
/// </summary>
public sealed class GenerationJobRunner(ApplianceOptions options, GenerationService generation) : IJobRunner
{
    private readonly FileHashes hashes = new(Path.Combine(options.DataFolder, "cache", "hashes.json"));

    public JobKind Kind => JobKind.Generation;

    public bool UsesDevice => true;

    public async Task<JsonElement?> RunAsync(JobContext context, CancellationToken cancellationToken)
    {
        var request = GenerationJobRequest.FromJson(context.Job.Request);
        var model = await generation.ModelForAsync(request, cancellationToken);
        // The sampler loop is synchronous: it runs on its own thread and checks the token between steps.
        var result = await Task.Factory.StartNew(() => Run(context, request, model, cancellationToken), cancellationToken,
            TaskCreationOptions.LongRunning, TaskScheduler.Default);
        return result.ToJson();
    }

    private GenerationJobResult Run(JobContext context, GenerationJobRequest request, CatalogModel catalogModel, CancellationToken cancellationToken)
    {
        var batch = generation.ToPipelineRequest(request, generation.LoadInitImage(request));
        var model = generation.Load(catalogModel, Device.Parse(context.Device), cancellationToken);
        var width = batch.Width ?? batch.InitImage?.Width ?? model.DefaultResolution;
        var height = batch.Height ?? batch.InitImage?.Height ?? model.DefaultResolution;
        Engine.UseThreads(model.UnetThreadDemand(2L * batch.BatchSize, height, width));
        var pipeline = new StableDiffusionPipeline(model, generation.AdapterFolders)
        {
            ModelHash = File.Exists(catalogModel.Path) ? hashes.ModelShortHash(catalogModel.Path) : null,
        };

        var folder = Path.Combine("outputs", DateTime.Now.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture));
        Directory.CreateDirectory(Path.Combine(options.DataFolder, folder));
        var files = new List<GeneratedFile>();
        var warnings = new List<string>();
        var seed = batch.Seed;
        GenerationResult? images = null;
        for (var iteration = 0; iteration < request.NIter; iteration++)
        {
            // Image i of the job has seed + i, over every batch (A1111's all_seeds); a random seed is drawn by the first batch.
            var done = iteration;
            images = pipeline.Generate(batch with { Seed = seed < 0 ? -1 : seed + iteration * batch.BatchSize }, new Progress(p => context.Publish(
                new JobEvent(0, default, "step") { Step = (long)done * p.TotalSteps + p.Step, TotalSteps = (long)request.NIter * p.TotalSteps })), cancellationToken);
            if (seed < 0) seed = images[0].Seed;
            foreach (var image in images)
            {
                var file = Path.Combine(folder, string.Create(CultureInfo.InvariantCulture, $"{context.Job.Id:N}-{files.Count:00}-{image.Seed}.png"));
                ImageCodec.Save(image.Image, Path.Combine(options.DataFolder, file), ImageEncodeOptions.Png);
                files.Add(new GeneratedFile(file, image.Seed, image.Parameters));
                context.Publish(new JobEvent(0, default, "image") { Image = file });
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
