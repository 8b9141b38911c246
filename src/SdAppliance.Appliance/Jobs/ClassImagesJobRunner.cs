using System.Text.Json;
using System.Text.Json.Nodes;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;
using SdAppliance.Training.Data;

using SdAppliance.Appliance.Storage;

namespace SdAppliance.Appliance.Jobs;

/// <summary>
/// DreamBooth class images ahead of a run: the request is the run's training settings (class_prompt, class_data,
/// num_class_images...); what the dataset's concepts lack is generated with the base model, as the trainer would.
/// </summary>
public sealed class ClassImagesJobRunner(PathGuard paths) : IJobRunner
{
    public JobKind Kind => JobKind.ClassImages;

    public bool UsesDevice => true;

    public void Check(JsonElement request) => TrainingRequests.Check(paths, request);

    public Task<JsonElement?> RunAsync(JobContext context, CancellationToken cancellationToken) =>
        Task.Factory.StartNew(() => Run(context, cancellationToken), cancellationToken, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    private JsonElement? Run(JobContext context, CancellationToken cancellationToken)
    {
        var config = TrainingRequests.Config(paths, context.Job.Request, context.Folder, context.Device);
        var dataset = TrainingDataset.Scan(DatasetOptions.Of(config), cancellationToken);
        var missing = dataset.MissingClassImages();
        var total = missing.Sum(m => m.Missing);
        foreach (var (concept, count) in missing)
            context.Publish(new JobEvent(0, default, JobEventTypes.Log) { Message = $"{count} class images of '{concept.ClassPrompt}' to generate" });
        if (total > 0)
        {
            // The run's VAE draws the class images, as the trainer's own class-image step does.
            using var model = ModelLoader.Load(config.Model!, new ModelLoadOptions(Device: Device.Parse(config.DeviceName), Vae: config.Vae), cancellationToken);
            Engine.UseThreads(model.UnetThreadDemand(2, config.Resolution, config.Resolution));
            var folders = missing.Select(m => m.Concept.ClassDataDir!).Distinct().ToList();
            var before = folders.SelectMany(f => Directory.Exists(f) ? Directory.EnumerateFiles(f, "class-*.png") : []).ToHashSet();
            new ClassImageGenerator(model, config).Complete(dataset, cancellationToken);
            foreach (var file in folders.SelectMany(f => Directory.EnumerateFiles(f, "class-*.png")).Where(f => !before.Contains(f)).Order(StringComparer.Ordinal))
                context.Publish(new JobEvent(0, default, JobEventTypes.Image) { Image = paths.Data.Relative(file) });
        }
        return JsonSerializer.SerializeToElement(new JsonObject { ["generated"] = total });
    }
}
