using System.Globalization;
using System.Text.Json;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Storage;
using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Formats;
using SdAppliance.Imaging;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;

namespace SdAppliance.Appliance.Generation;

/// <summary>
/// Runs generation jobs as <c>sdapp generate</c> does (the same pipeline, model hash and infotext), batch after batch
/// (<see cref="GenerationJobRequest.NIter"/>): a <c>step</c> event per sampler step, an <c>image</c> event per PNG, each
/// PNG (with its <c>parameters</c> text) saved by <see cref="OutputService"/> (<c>outputs/yyyy-MM-dd/</c>, written
/// atomically, recorded as its owner's); while it samples, a <c>preview</c> event now and then
/// (<see cref="GenerationOptions.PreviewInterval"/>) with the picture so far, a PNG in the job's folder.
/// </summary>
public sealed class GenerationJobRunner(DataFolder data, OutputService outputs, GenerationService generation, GenerationOptions options) : IJobRunner
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
        var entry = await generation.ModelForAsync(owner, request, cancellationToken);
        request = GenerationService.WithModelDefaults(entry, request, request.InitImage is not null);
        var batch = await generation.ToPipelineRequestAsync(owner, request, generation.LoadInitImage(request), cancellationToken);
        var vae = await generation.VaeForAsync(request, cancellationToken);
        var backend = GenerationService.ChooseBackend(entry, request, batch, vae is not null);
        // Loading and sampling are synchronous: they run on a thread of their own and check the token as they go.
        var model = await OwnThread(() => generation.Load(entry, Device.Parse(context.Device), backend.Backend, cancellationToken, vae?.Path), cancellationToken);
        var width = batch.Width ?? batch.InitImage?.Width ?? model.DefaultResolution;
        var height = batch.Height ?? batch.InitImage?.Height ?? model.DefaultResolution;
        // ONNX Runtime keeps its own thread pool (its sessions' intra-op threads).
        if (model is StableDiffusionModel torchModel) Engine.UseThreads(torchModel.UnetThreadDemand(2L * batch.BatchSize, height, width));
        // The refiner runs on libtorch beside the model, on the same device.
        var refinerEntry = await generation.RefinerForAsync(owner, request, cancellationToken);
        var refiner = refinerEntry is null ? null
            : await OwnThread(() => generation.Load(refinerEntry, Device.Parse(context.Device), cancellationToken, vae?.Path), cancellationToken);
        var pipeline = new StableDiffusionPipeline(model, generation.AdapterFolders)
        {
            ModelHash = generation.ModelHash(entry),
            Refiner = refiner,
            RefinerHash = refinerEntry is null ? null : generation.ModelHash(refinerEntry),
        };

        var previews = new PreviewClock(options.PreviewInterval);
        var files = new List<GeneratedFile>();
        var warnings = new List<string>();
        var seed = batch.Seed;
        for (var iteration = 0; iteration < request.NIter; iteration++)
        {
            // Image i of the job has seed + i, over every batch (A1111's all_seeds); a random seed is drawn by the first batch.
            var done = iteration;
            var progress = new Progress(p =>
            {
                var step = (long)done * p.TotalSteps + p.Step;
                var total = (long)request.NIter * p.TotalSteps;
                context.Publish(new JobEvent(0, default, JobEventTypes.Step) { Step = step, TotalSteps = total });
                if (previews.Due(p) is { } preview)
                    context.Publish(new JobEvent(0, default, JobEventTypes.Preview) { Step = step, TotalSteps = total, Image = SavePreview(context, step, preview) });
            });
            var next = batch with { Seed = seed < 0 ? -1 : seed + iteration * batch.BatchSize };
            var images = await OwnThread(() => pipeline.Generate(next, progress, cancellationToken), cancellationToken);
            if (seed < 0) seed = images[0].Seed;
            foreach (var image in images)
            {
                var output = await outputs.SaveAsync(context.Job.OwnerId, image.Image, image.Seed, CancellationToken.None);
                var file = Path.GetRelativePath(data.FullPath, Path.Combine(data.Outputs, output.Path)).Replace('\\', '/');
                files.Add(new GeneratedFile(file, image.Seed, image.Parameters));
                context.Publish(new JobEvent(0, default, JobEventTypes.Image) { Image = file });
            }
            warnings.AddRange(images.Warnings.Select(w => w.ToString()).Except(warnings));
        }
        return new GenerationJobResult(files, width, height, model.Name, pipeline.ModelHash, batch.Sampler, warnings)
        {
            Backend = backend.Name,
            BackendReason = backend.Reason,
            VaeName = vae is null ? null : Path.GetFileName(vae.Name),
            VaeHash = vae?.ShortHash,
        }.ToJson();
    }

    // A preview is the job's own file (jobs/ID/preview-STEP.png), not an output: it is not the caller's picture.
    private string SavePreview(JobContext context, long step, RgbImage preview)
    {
        var path = Path.Combine(context.Folder, $"preview-{step.ToString("D5", CultureInfo.InvariantCulture)}.png");
        AtomicFile.WriteAllBytes(path, ImageCodec.Encode(preview));
        return Path.GetRelativePath(data.FullPath, path).Replace('\\', '/');
    }

    /// <summary>When the next preview is due: not before the interval since the last one, never at a batch's last step.</summary>
    private sealed class PreviewClock(TimeSpan? interval)
    {
        private readonly System.Diagnostics.Stopwatch clock = System.Diagnostics.Stopwatch.StartNew();
        private TimeSpan last = TimeSpan.Zero;

        public RgbImage? Due(GenerationProgress progress)
        {
            if (interval is not { } every || progress.Preview is not { } draw || progress.Step >= progress.TotalSteps) return null;
            var now = clock.Elapsed;
            if (now - last < every) return null;
            last = now;
            return draw();
        }
    }

    private static Task<T> OwnThread<T>(Func<T> work, CancellationToken cancellationToken) =>
        Task.Factory.StartNew(work, cancellationToken, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    /// <summary>Reports on the sampler's thread, in order (<see cref="Progress{T}"/> would post to the thread pool).</summary>
    private sealed class Progress(Action<GenerationProgress> report) : IProgress<GenerationProgress>
    {
        public void Report(GenerationProgress value) => report(value);
    }
}
