using SdAppliance.Formats;
using SdAppliance.Imaging;
using SdAppliance.Onnx.Tagging;

namespace SdAppliance.Onnx.Tests;

/// <summary>
/// The WD14 tagger run on <see cref="TinyTagger"/>: what it reads from the folder, how it prepares an image, which tags
/// it writes for each image (order, thresholds, categories, undesired tags, underscores, the caption modes) and what it
/// skips. The tiny tagger's scores of a plain colour are known in closed form (<see cref="TinyTagger.Scores"/>), so the
/// expected captions are written out by hand here and checked against that formula too.
/// </summary>
public sealed class TaggingTests : IDisposable
{
    private readonly string root = Directory.CreateTempSubdirectory("sdapp-tagging-").FullName;
    private readonly string taggerFolder;
    private readonly string dataset;

    public TaggingTests()
    {
        taggerFolder = TinyTagger.Write(Path.Combine(root, "tagger"));
        dataset = Path.Combine(root, "data");
        Directory.CreateDirectory(dataset);
    }

    public void Dispose() => Directory.Delete(root, recursive: true);

    private static RgbImage Plain(int width, int height, byte r, byte g, byte b)
    {
        var image = new RgbImage(width, height, 3);
        for (var i = 0; i < width * height; i++) (image.Pixels[i * 3], image.Pixels[i * 3 + 1], image.Pixels[i * 3 + 2]) = (r, g, b);
        return image;
    }

    private string Save(string relative, RgbImage image, ImageEncodeOptions? options = null)
    {
        var path = Path.Combine(dataset, relative);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        ImageCodec.Save(image, path, options);
        return path;
    }

    private string CaptionOf(string relative) => File.ReadAllText(Path.Combine(dataset, Path.ChangeExtension(relative, ".txt")));

    private CaptioningResult Run(CaptionOptions? options = null)
    {
        using var tagger = WdTagger.Load(taggerFolder);
        return DatasetCaptioner.Caption(tagger, dataset, options ?? new CaptionOptions());
    }

    [Fact]
    public void TheTinyTaggerIsAValidModelAndItsSizeAndTagsAreReadFromTheFolder()
    {
        OnnxChecker.AssertValid(Path.Combine(taggerFolder, WdTagger.ModelFileName));
        using var tagger = WdTagger.Load(taggerFolder);
        Assert.Equal((24, 24), (tagger.Width, tagger.Height));
        Assert.Equal(TinyTagger.Tags.Select(t => (t.Name, t.Category)), tagger.Tags.Select(t => (t.Name, t.Category)));
    }

    [Fact]
    public void ScoresOfAPlainColourAreTheTinyTaggersFormula()
    {
        using var tagger = WdTagger.Load(taggerFolder);
        var actual = tagger.Score(Plain(24, 24, 200, 40, 90));
        var expected = TinyTagger.Scores(200, 40, 90);
        // float32 mean of 576 equal values and a sigmoid: within a few float ulps of the double formula.
        Assert.All(expected.Zip(actual), p => Assert.Equal(p.First, p.Second, 1e-5));
    }

    [Fact]
    public void AnImageIsPaddedToAWhiteSquareAndFedAsBgrFrom0To255()
    {
        // 2x1: a red pixel and a blue one. Square: 2x2, the odd row below, white; the model's size, so no resize.
        var image = new RgbImage(2, 1, 3, [255, 0, 0, 0, 0, 255]);
        var input = WdTagger.Prepare(image, 2, 2);
        Assert.Equal(new float[] { 0, 0, 255, 255, 0, 0, 255, 255, 255, 255, 255, 255 }, input);
        // A transparent pixel is white, as the taggers flatten alpha.
        var clear = new RgbImage(1, 1, 4, [10, 20, 30, 0]);
        Assert.Equal(new float[] { 255, 255, 255 }, WdTagger.Prepare(clear, 1, 1));
    }

    [Fact]
    public void EachImageGetsItsTagsByScoreAboveTheThresholdsWithSpacesAndKaomojiKept()
    {
        Save("red.png", Plain(30, 30, 255, 0, 0));
        Save("10_green/green.jpg", Plain(32, 32, 0, 255, 0), new ImageEncodeOptions { Format = ImageFormat.Jpeg, Quality = 100, JpegSubsampling = JpegSubsampling.Yuv444 });
        Save("10_green/white.webp", Plain(16, 16, 255, 255, 255), new ImageEncodeOptions { Format = ImageFormat.WebP, Lossless = true });
        var result = Run();

        Assert.Empty(result.Skipped);
        Assert.Equal(["10_green/green.jpg", "10_green/white.webp", "red.png"], result.Written.Select(w => w.Image));
        // Red: red 0.998, dark 0.731, simple_background 0.5, ^_^ 0.4. Not bright (0.269), not looking_at_viewer (0.3 < 0.35),
        // not kaname_madoka (0.6, a character: 0.85 needed); the rating is not written. Fed as RGB it would read "blue".
        Assert.Equal("red, dark, simple background, ^_^", CaptionOf("red.png"));
        // Green: the character hatsune_miku_(vocaloid) scores 0.993, above 0.85.
        Assert.Equal("green, hatsune miku (vocaloid), dark, simple background, ^_^", CaptionOf("10_green/green.jpg"));
        Assert.Equal("bright, simple background, ^_^", CaptionOf("10_green/white.webp"));
        var red = result.Written.Single(w => w.Image == "red.png");
        Assert.Equal(red.Tags.Select(t => t.Score).OrderDescending(), red.Tags.Select(t => t.Score));
        var expected = TinyTagger.Scores(255, 0, 0);
        Assert.All(red.Tags, t => Assert.Equal(expected[TinyTagger.Tags.ToList().FindIndex(x => x.Name == t.Tag.Name)], t.Score, 1e-5));
    }

    [Fact]
    public void ANarrowBlackImageIsPaddedWithWhite()
    {
        // 10x40 black on a 40x40 white square: mean 0.75, so bright (0.82), not dark (0.18). Black padding would read dark.
        Save("narrow.png", Plain(10, 40, 0, 0, 0));
        Save("square.png", Plain(40, 40, 0, 0, 0));
        Run();
        Assert.Equal("bright, simple background, ^_^", CaptionOf("narrow.png"));
        Assert.Equal("dark, simple background, ^_^", CaptionOf("square.png"));
    }

    [Fact]
    public void ThresholdsCategoriesRatingUndesiredTagsAndUnderscoresAreOptions()
    {
        Save("red.png", Plain(24, 24, 255, 0, 0));
        Run(new CaptionOptions { Threshold = 0.25, CharacterThreshold = 0.55, RatingTag = true, Mode = CaptionMode.Overwrite });
        // 0.25 lets bright (0.269) and looking_at_viewer (0.3) in; 0.55 lets kaname_madoka (0.6); the rating (sensitive 0.88) comes first.
        Assert.Equal("sensitive, red, dark, kaname madoka, simple background, ^_^, looking at viewer, bright", CaptionOf("red.png"));

        Run(new CaptionOptions { KeepUnderscores = true, UndesiredTags = CaptionOptions.ParseTagList(" dark , looking at viewer,,red"), Threshold = 0.25, Mode = CaptionMode.Overwrite });
        // Undesired tags match with underscores or spaces; kept underscores are the CSV's spelling.
        Assert.Equal("simple_background, ^_^, bright", CaptionOf("red.png"));
    }

    [Fact]
    public void ACaptionIsKeptAppendedToOrOverwrittenAsTheModeSays()
    {
        Save("a.png", Plain(24, 24, 255, 0, 0));
        Save("b.png", Plain(24, 24, 255, 0, 0));
        Save("c.png", Plain(24, 24, 255, 0, 0));
        var txt = (string name) => Path.Combine(dataset, name);
        File.WriteAllText(txt("a.txt"), "my cat, red\nsecond line");
        File.WriteAllText(txt("b.txt"), "  \n");

        var kept = Run();
        Assert.Equal("my cat, red\nsecond line", File.ReadAllText(txt("a.txt")));
        Assert.Equal(new SkippedImage("a.png", "has a caption already (append or overwrite to change it)"), Assert.Single(kept.Skipped));
        Assert.Equal("red, dark, simple background, ^_^", File.ReadAllText(txt("b.txt")));  // an empty caption file is no caption

        Run(new CaptionOptions { Mode = CaptionMode.Append });
        // Its own tags first, in its order; the tagger's that it lacks after; its later lines kept.
        Assert.Equal("my cat, red, dark, simple background, ^_^\nsecond line", File.ReadAllText(txt("a.txt")));
        var again = Run(new CaptionOptions { Mode = CaptionMode.Append });
        Assert.Equal(3, again.Skipped.Count(s => s.Reason == "its caption has every tag already"));

        Run(new CaptionOptions { Mode = CaptionMode.Overwrite, UndesiredTags = ["^_^"] });
        Assert.Equal("red, dark, simple background", File.ReadAllText(txt("a.txt")));
        Assert.Empty(Directory.EnumerateFiles(dataset, "*.tmp*", SearchOption.AllDirectories));
    }

    [Fact]
    public void BadImagesAreSkippedWithTheirReasonAndTheRestAreCaptioned()
    {
        Save("good.png", Plain(24, 24, 255, 0, 0));
        File.WriteAllText(Path.Combine(dataset, "notes.png"), "not an image");
        var png = ImageCodec.Encode(Plain(24, 24, 0, 255, 0));
        File.WriteAllBytes(Path.Combine(dataset, "cut.png"), png[..(png.Length / 2)]);
        File.WriteAllBytes(Path.Combine(dataset, "empty.jpg"), []);
        Directory.CreateDirectory(Path.Combine(dataset, ".cache"));
        File.WriteAllText(Path.Combine(dataset, ".cache", "x.png"), "hidden folders are not the dataset's");
        File.WriteAllText(Path.Combine(dataset, "readme.md"), "not an image extension");

        var result = Run();
        Assert.Equal("good.png", Assert.Single(result.Written).Image);
        Assert.Equal(["cut.png", "empty.jpg", "notes.png"], result.Skipped.Select(s => s.Image));
        Assert.StartsWith("not a PNG, JPEG or WebP image", result.Skipped.Single(s => s.Image == "notes.png").Reason);
        Assert.Equal("the file is empty", result.Skipped.Single(s => s.Image == "empty.jpg").Reason);
        Assert.NotEmpty(result.Skipped.Single(s => s.Image == "cut.png").Reason);
        Assert.False(File.Exists(Path.Combine(dataset, "notes.txt")));
        Assert.False(File.Exists(Path.Combine(dataset, "cut.txt")));
    }

    [Fact]
    public void ProgressIsReportedPerImageAndCancellationStopsTheRun()
    {
        for (var i = 0; i < 3; i++) Save($"{i}.png", Plain(24, 24, 255, 0, 0));
        using var tagger = WdTagger.Load(taggerFolder);
        var seen = new List<CaptioningProgress>();
        using var cancel = new CancellationTokenSource();
        var progress = new Progress(p =>
        {
            seen.Add(p);
            if (p.Done == 2) cancel.Cancel();
        });
        Assert.Throws<OperationCanceledException>(() => DatasetCaptioner.Caption(tagger, dataset, new CaptionOptions(), progress, cancel.Token));
        Assert.Equal([new CaptioningProgress(1, 3, "0.png"), new CaptioningProgress(2, 3, "1.png")], seen);
        Assert.False(File.Exists(Path.Combine(dataset, "2.txt")));
    }

    [Fact]
    public void AFolderWithoutItsFilesOrWithAMismatchedModelIsRefusedNamingTheFile()
    {
        var empty = Path.Combine(root, "empty");
        Directory.CreateDirectory(empty);
        var e = Assert.ThrowsAny<UserInputException>(() => WdTagger.Load(empty));
        Assert.Equal(Path.Combine(empty, "model.onnx"), e.Subject);

        File.Delete(Path.Combine(taggerFolder, "selected_tags.csv"));
        e = Assert.ThrowsAny<UserInputException>(() => WdTagger.Load(taggerFolder));
        Assert.Equal(Path.Combine(taggerFolder, "selected_tags.csv"), e.Subject);

        File.WriteAllText(Path.Combine(taggerFolder, "selected_tags.csv"), "tag_id,tag,count\n1,red,5\n");
        e = Assert.ThrowsAny<UserInputException>(() => WdTagger.Load(taggerFolder));
        Assert.Contains("has no 'name' column", e.Message);

        File.WriteAllText(Path.Combine(taggerFolder, "selected_tags.csv"), "tag_id,name,category,count\n1,red,zero,5\n");
        e = Assert.ThrowsAny<UserInputException>(() => WdTagger.Load(taggerFolder));
        Assert.Equal(Path.Combine(taggerFolder, "selected_tags.csv") + ":2", e.Subject);

        var wide = TinyTagger.Write(Path.Combine(root, "wide"), outputWidth: TinyTagger.Tags.Count + 1);
        TinyTagger.Write(Path.Combine(root, "wide-tags"));
        File.Copy(Path.Combine(root, "wide-tags", "selected_tags.csv"), Path.Combine(wide, "selected_tags.csv"), overwrite: true);
        e = Assert.ThrowsAny<UserInputException>(() => WdTagger.Load(wide));
        Assert.Equal(Path.Combine(wide, "model.onnx"), e.Subject);
        Assert.Contains("gives 15 scores, but selected_tags.csv lists 14 tags", e.Message);

        File.WriteAllText(Path.Combine(wide, "model.onnx"), "not a model");
        e = Assert.ThrowsAny<UserInputException>(() => WdTagger.Load(wide));
        Assert.Contains("cannot be loaded by ONNX Runtime", e.Message);
    }

    [Fact]
    public void OptionsThatCannotWorkAreRefusedNamingTheField()
    {
        Assert.Equal("threshold", Assert.ThrowsAny<UserInputException>(() => new CaptionOptions { Threshold = 1.5 }.Validate()).Subject);
        Assert.Equal("character_threshold", Assert.ThrowsAny<UserInputException>(() => new CaptionOptions { CharacterThreshold = double.NaN }.Validate()).Subject);
        Assert.Equal("caption_extension", Assert.ThrowsAny<UserInputException>(() => new CaptionOptions { CaptionExtension = "txt" }.Validate()).Subject);
        Assert.Equal("caption_extension", Assert.ThrowsAny<UserInputException>(() => new CaptionOptions { CaptionExtension = ".PNG" }.Validate()).Subject);
    }

    private sealed class Progress(Action<CaptioningProgress> report) : IProgress<CaptioningProgress>
    {
        public void Report(CaptioningProgress value) => report(value);
    }
}
