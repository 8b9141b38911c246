using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Models.Loading;
using SdAppliance.Tools.DemoData;
using SdAppliance.Training;
using Xunit.Abstractions;

namespace SdAppliance.Demo.Tests;

/// <summary>
/// The demo model learns a new concept on a CPU in minutes: a DreamBooth run of the project's Trainer
/// on 8 pictures of hearts (a shape the base data never showed) called "a zwx shape", with prior
/// preservation on pictures of the base world, so that afterwards "a zwx shape" draws hearts while
/// "a red circle" still draws circles.
/// </summary>
public sealed class DemoConceptTests(ITestOutputHelper output) : IDisposable
{
    private readonly string folder = Path.Combine(Path.GetTempPath(), "sdapp-demo-concept-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
    }

    [Fact]
    public void DreamBoothTeachesAHeart()
    {
        // Like the photos of a DreamBooth subject: the same object, large and centred, in varying colours.
        var random = new Random(5);
        var hearts = Enumerable.Range(0, 8).Select(_ => ShapeClassifier.PlainScene(random, Shapes.Heart) with
        {
            Size = "large", Position = "center",
            CenterX = 30 + 4 * random.NextDouble(), CenterY = 30 + 4 * random.NextDouble(), Radius = 17 + 5 * random.NextDouble(),
        }).ToList();
        var instances = Path.Combine(folder, "zwx");
        Directory.CreateDirectory(instances);
        for (var i = 0; i < hearts.Count; i++)
            SdAppliance.Imaging.ImageCodec.Save(hearts[i].Render(), Path.Combine(instances, $"heart-{i}.png"));
        // The class images are pictures of the base world with their own captions.
        DemoScene.Write(DemoScene.Dataset(9, 32, Shapes.Base), Path.Combine(folder, "prior"));

        var classifier = ShapeClassifier.Fit(Shapes.All, perShape: 60, seed: 7);
        int HeartsDrawn(StableDiffusionModel model)
        {
            var pipeline = new StableDiffusionPipeline(model);
            return Enumerable.Range(1, SamplesPerPrompt).Count(seed => classifier.Classify(SceneReading.Read(
                pipeline.Generate(new GenerationRequest { Prompt = "a zwx shape", Seed = seed, Steps = 20 })[0].Image)) == Shapes.Heart);
        }
        int heartsBefore;
        using (var baseModel = ModelLoader.Load(DemoModelLocation.Folder))
            heartsBefore = HeartsDrawn(baseModel);

        var report = Trainer.Train(new TrainingConfig
        {
            Method = "dreambooth",
            Model = DemoModelLocation.Folder,
            Data = instances,
            InstancePrompt = "a zwx shape",
            ClassPrompt = "a shape",
            ClassData = Path.Combine(folder, "prior"),
            Output = Path.Combine(folder, "run"),
            OutputName = "zwx",
            Resolution = DemoScene.ImageSize,
            TrainBatchSize = 4,
            MaxTrainSteps = ConceptSteps,
            LearningRate = 1e-3,
            TrainTextEncoder = true,
            SaveDiffusers = true,
            Seed = 3,
        });
        output.WriteLine($"dreambooth: {report.Steps} steps in {report.Duration.TotalSeconds:F0} s, loss {report.FinalSmoothedLoss:F4}");

        using var model = ModelLoader.Load(Path.Combine(folder, "run", "zwx-diffusers"));
        var pipeline = new StableDiffusionPipeline(model);
        int heartCount = 0, circleCount = 0;
        for (var seed = 1; seed <= SamplesPerPrompt; seed++)
        {
            var heart = SceneReading.Read(pipeline.Generate(new GenerationRequest { Prompt = "a zwx shape", Seed = seed, Steps = 20 })[0].Image);
            var circle = SceneReading.Read(pipeline.Generate(new GenerationRequest { Prompt = "a red circle", Seed = seed, Steps = 20 })[0].Image);
            var heartSeen = classifier.Classify(heart);
            var circleSeen = classifier.Classify(circle);
            if (heartSeen == Shapes.Heart) heartCount++;
            if (circleSeen == "circle" && circle.Foreground == "red") circleCount++;
            output.WriteLine($"seed {seed}: 'a zwx shape' -> {heart.Foreground} {heartSeen ?? "nothing"}; 'a red circle' -> {circle.Foreground} {circleSeen ?? "nothing"}");
        }
        output.WriteLine($"hearts before {heartsBefore}, after {heartCount}; red circles after {circleCount} of {SamplesPerPrompt}");
        // Measured on the committed model (see its card): hearts in 15 of 20, red circles in 17 of 20;
        // the levels below leave three images of margin for another CPU's float rounding.
        Assert.True(heartCount > heartsBefore, $"'a zwx shape' drew hearts in {heartCount} of {SamplesPerPrompt} images after training, {heartsBefore} before");
        Assert.True(heartCount >= MinHearts, $"'a zwx shape' drew hearts in {heartCount} of {SamplesPerPrompt} images");
        Assert.True(circleCount >= MinCircles, $"'a red circle' drew red circles in {circleCount} of {SamplesPerPrompt} images");
    }

    private const int ConceptSteps = 300;
    private const int SamplesPerPrompt = 20;
    private const int MinHearts = 12;
    private const int MinCircles = 14;
}
