using SdAppliance.Tools.DemoData;

namespace SdAppliance.Demo.Tests;

/// <summary>
/// The judge of the demo model's acceptance tests, checked first on the scene generator's own pictures:
/// the very images the model was trained on (and hearts, the held-out concept), where the answer is known.
/// </summary>
public sealed class DemoClassifierTests
{
    // The training set as train-demo writes it (seed 1, 4096 scenes); the classifier is fitted on other scenes.
    private static IEnumerable<DemoScene> TrainingScenes(int count) =>
        DemoScene.Dataset(1, 4096, Shapes.Base).Where(s => s.Background2 is null).Take(count);

    [Fact]
    public void ReadsColoursOfTheTrainingImages()
    {
        var scenes = TrainingScenes(300).ToList();
        var right = scenes.Count(s =>
        {
            var reading = SceneReading.Read(s.Render());
            return reading.Foreground == s.Colour && reading.Background == s.Background;
        });
        // Plain saturated colours on a plain background: every picture must be read right.
        Assert.Equal(scenes.Count, right);
    }

    [Fact]
    public void RecognisesTheShapesOfTheTrainingImages()
    {
        var classifier = ShapeClassifier.Fit(Shapes.Base, perShape: 60, seed: 7);
        var scenes = TrainingScenes(600).ToList();
        var wrong = scenes.Where(s => classifier.Classify(SceneReading.Read(s.Render())) != s.Shape).ToList();
        var accuracy = 1 - wrong.Count / (double)scenes.Count;
        Assert.True(accuracy >= 0.95, $"accuracy {accuracy:P1}; wrong: {string.Join("; ", wrong.Take(10).Select(s => s.Caption))}");
    }

    [Fact]
    public void RecognisesHeartsAmongTheOtherShapes()
    {
        var classifier = ShapeClassifier.Fit(Shapes.All, perShape: 60, seed: 7);
        var random = new Random(11);
        var scenes = Shapes.All.SelectMany(shape => Enumerable.Range(0, 40).Select(_ => ShapeClassifier.PlainScene(random, shape))).ToList();
        var wrong = scenes.Where(s => classifier.Classify(SceneReading.Read(s.Render())) != s.Shape).ToList();
        var accuracy = 1 - wrong.Count / (double)scenes.Count;
        Assert.True(accuracy >= 0.95, $"accuracy {accuracy:P1}; wrong: {string.Join("; ", wrong.Take(10).Select(s => s.Caption))}");
    }

    [Fact]
    public void GeneratorIsDeterministic()
    {
        var a = DemoScene.Dataset(3, 20, Shapes.Base);
        var b = DemoScene.Dataset(3, 20, Shapes.Base);
        Assert.Equal(a, b);
        Assert.Equal(a[5].Render().Pixels, b[5].Render().Pixels);
        Assert.NotEqual(a, DemoScene.Dataset(4, 20, Shapes.Base));
    }
}
