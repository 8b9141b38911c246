using System.Text.Json.Nodes;
using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Formats;
using SdAppliance.Imaging;
using SdAppliance.Models.Loading;

namespace SdAppliance.Training.Data;

/// <summary>
/// Prior preservation: the class images a dataset's concepts ask for and do not have yet, generated with the base
/// model before training (the class prompt, the sample sampler and steps, seeds recorded in a
/// <c>class_images-TIME.json</c> beside them).
/// </summary>
public sealed class ClassImageGenerator(StableDiffusionModel model, TrainingConfig config)
{
    /// <summary>Generates what is missing and returns the dataset scanned again with the new images; the same dataset when nothing is missing.</summary>
    public TrainingDataset Complete(TrainingDataset dataset, CancellationToken cancellationToken = default)
    {
        var missing = dataset.MissingClassImages();
        if (missing.Count == 0) return dataset;
        var pipeline = new StableDiffusionPipeline(model);
        foreach (var (concept, count) in missing)
        {
            var folder = concept.ClassDataDir ?? throw new TrainingConfigException("class_data: prior preservation needs a folder for the class images");
            Directory.CreateDirectory(folder);
            var record = new JsonArray();
            var existing = Directory.EnumerateFiles(folder, "class-*.png").Count();
            for (var i = 0; i < count; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var seed = config.Seed * 1000 + existing + i;
                var image = pipeline.Generate(new GenerationRequest
                {
                    Prompt = concept.ClassPrompt!, Seed = seed, Steps = config.SampleSteps, Sampler = config.SampleSampler,
                    Width = config.Resolution, Height = config.Resolution,
                }, cancellationToken: cancellationToken)[0];
                var file = Path.Combine(folder, $"class-{existing + i:D5}.png");
                ImageCodec.Save(image.Image, file);
                record.Add(new JsonObject { ["file"] = Path.GetFileName(file), ["prompt"] = concept.ClassPrompt, ["seed"] = seed });
            }
            AtomicFile.WriteAllText(Path.Combine(folder, $"class_images-{DateTime.UtcNow:yyyyMMddHHmmss}.json"), record.ToJsonString(TrainingConfig.Json));
        }
        return TrainingDataset.Scan(dataset.Options, cancellationToken);
    }
}
