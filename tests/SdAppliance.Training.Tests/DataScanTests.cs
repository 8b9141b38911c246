using System.Text;
using SdAppliance.Imaging;
using SdAppliance.Training.Data;

namespace SdAppliance.Training.Tests;

public sealed class DataScanTests
{
    [Fact]
    public void CaptionFilesBesideImagesWinAndTheInstancePromptFillsIn()
    {
        using var folder = new DataTestFolder();
        folder.Image("a.png", 64, 64);
        folder.Text("a.txt", "  a red cube, studio light  \r\nsecond line is ignored\n");
        folder.Image("b.jpg", 80, 64);
        folder.Image("c.webp", 64, 72);
        folder.Text("c.caption", "other extension");
        folder.Text("notes.md", "not an image");
        var dataset = TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root, InstancePrompt = "photo of sks cube" });

        Assert.Equal(["a.png", "b.jpg", "c.webp"], dataset.Items.Select(i => Path.GetFileName(i.Path)));
        Assert.Equal(["a red cube, studio light", "photo of sks cube", "photo of sks cube"], dataset.Items.Select(i => i.Caption));
        Assert.Equal([true, false, false], dataset.Items.Select(i => i.HasCaptionFile));
        Assert.Equal([(64, 64), (80, 64), (64, 72)], dataset.Items.Select(i => (i.Width, i.Height)));
        Assert.All(dataset.Items, i => Assert.False(i.IsPrior));
        Assert.Empty(dataset.Skipped);
        Assert.Empty(dataset.PriorItems);
        Assert.Equal(3, dataset.ExamplesPerEpoch);

        var other = TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root, InstancePrompt = "p", CaptionExtension = "caption" });
        Assert.Equal(["p", "p", "other extension"], other.Items.Select(i => i.Caption));
    }

    [Fact]
    public void KohyaRepeatFoldersRepeatTheirImagesAndNameTheirCaption()
    {
        using var folder = new DataTestFolder();
        folder.Image("root.png", 64, 64);
        folder.Image("3_sks_dog/a.png", 64, 64);
        folder.Image("3_sks_dog/b.png", 64, 64);
        folder.Text("3_sks_dog/b.txt", "captioned dog");
        folder.Image("2/c.png", 64, 64);
        folder.Image("raw/d.png", 64, 64);
        folder.Image("0_none/e.png", 64, 64);
        folder.Image(".hidden/f.png", 64, 64);
        var dataset = TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root, InstancePrompt = "fallback" });

        var byName = dataset.Items.ToDictionary(i => Path.GetFileName(i.Path));
        // The folder's own images, then sub-folders in ordinal order ("2" before "3_sks_dog").
        Assert.Equal(["root.png", "c.png", "a.png", "b.png"], dataset.Items.Select(i => Path.GetFileName(i.Path)));
        // kohya: the text after the first underscore is the caption of uncaptioned images, underscores kept.
        Assert.Equal(("sks_dog", 3), (byName["a.png"].Caption, byName["a.png"].Repeats));
        Assert.Equal(("captioned dog", 3), (byName["b.png"].Caption, byName["b.png"].Repeats));
        // A bare count has no name: the instance prompt fills in.
        Assert.Equal(("fallback", 2), (byName["c.png"].Caption, byName["c.png"].Repeats));
        Assert.Equal(("fallback", 1), (byName["root.png"].Caption, byName["root.png"].Repeats));
        Assert.Equal(1 + 3 + 3 + 2, dataset.ExamplesPerEpoch);
        Assert.Contains(dataset.Skipped, s => s.Path.EndsWith("raw") && s.Reason.Contains("repeat count"));
        Assert.Contains(dataset.Skipped, s => s.Path.EndsWith("0_none") && s.Reason.Contains("below 1"));
        Assert.DoesNotContain(dataset.Skipped, s => s.Path.Contains(".hidden"));
        Assert.Equal(2, dataset.Skipped.Count);
    }

    [Fact]
    public void BadImagesAreSkippedWithTheirReason()
    {
        using var folder = new DataTestFolder();
        folder.Image("good.png", 64, 64);
        folder.Image("tiny.png", 63, 200);
        folder.Bytes("old.bmp", [0x42, 0x4D, 0, 0]);
        folder.Bytes("noise.png", Encoding.ASCII.GetBytes("this is not a png at all"));
        folder.Bytes("empty.jpg", []);
        var jpeg = ImageCodec.Encode(DataTestFolder.Pattern(64, 64), new ImageEncodeOptions { Format = ImageFormat.Jpeg });
        // Cut off after the header and part of the scan: the header still reads, the pixels do not.
        folder.Bytes("truncated.jpg", jpeg[..(jpeg.Length * 2 / 3)]);
        folder.Image("latin1.png", 64, 64);
        folder.Bytes("latin1.txt", [0x63, 0x61, 0x66, 0xE9]);  // "café" in Latin-1: not UTF-8

        var dataset = TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root, InstancePrompt = "x" });
        Assert.Equal(["good.png"], dataset.Items.Select(i => Path.GetFileName(i.Path)));
        var reasons = dataset.Skipped.ToDictionary(s => Path.GetFileName(s.Path), s => s.Reason);
        Assert.Equal(["empty.jpg", "latin1.png", "noise.png", "old.bmp", "tiny.png", "truncated.jpg"], reasons.Keys.Order(StringComparer.Ordinal));
        Assert.Contains("63x200 is smaller than 64 px", reasons["tiny.png"]);
        Assert.Contains("BMP", reasons["old.bmp"]);
        Assert.Contains("not a PNG, JPEG or WebP", reasons["noise.png"]);
        Assert.Contains("empty", reasons["empty.jpg"]);
        Assert.StartsWith("corrupt", reasons["truncated.jpg"]);
        Assert.Contains("not UTF-8", reasons["latin1.png"]);

        // Headers alone do not see the truncation.
        var headersOnly = TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root, InstancePrompt = "x", VerifyImages = false });
        Assert.Contains(headersOnly.Items, i => i.Path.EndsWith("truncated.jpg"));
    }

    [Fact]
    public void MissingFoldersAndEmptyDatasetsFailBeforeAnyWorkNamingTheField()
    {
        using var folder = new DataTestFolder();
        var missing = Assert.Throws<DatasetException>(() => TrainingDataset.Scan(new DatasetOptions { DataDir = folder.PathOf("nope") }));
        Assert.Equal("DataDir", missing.Field);
        Assert.Contains("does not exist", missing.Message);

        Assert.Equal("DataDir", Assert.Throws<DatasetException>(() => TrainingDataset.Scan(new DatasetOptions())).Field);

        folder.Text("readme.txt", "no images here");
        folder.Image("tiny.png", 8, 8);
        var empty = Assert.Throws<DatasetException>(() => TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root }));
        Assert.Equal("DataDir", empty.Field);
        Assert.Contains("no usable training images", empty.Message);
        Assert.Contains("tiny.png", empty.Message);

        folder.Image("ok.png", 64, 64);
        var concept = Assert.Throws<DatasetException>(() => TrainingDataset.Scan(new DatasetOptions
        {
            Concepts = [new ConceptSpec(folder.Root), new ConceptSpec(folder.PathOf("gone"))],
        }));
        Assert.Equal("concepts[1].instance_data_dir", concept.Field);
    }

    [Theory]
    [InlineData("Resolution")]
    [InlineData("KeepTokens")]
    [InlineData("CaptionDropoutRate")]
    [InlineData("NumClassImages")]
    [InlineData("ClassDataDir")]
    [InlineData("CaptionExtension")]
    [InlineData("concepts[0].repeats")]
    [InlineData("concepts[0].class_data_dir")]
    public void BadOptionsNameTheirField(string field)
    {
        using var folder = new DataTestFolder();
        folder.Image("ok.png", 64, 64);
        var good = new DatasetOptions { DataDir = folder.Root };
        var bad = field switch
        {
            "Resolution" => good with { Resolution = 500 },
            "KeepTokens" => good with { KeepTokens = -1 },
            "CaptionDropoutRate" => good with { CaptionDropoutRate = 1.5 },
            "NumClassImages" => good with { NumClassImages = -2 },
            // The acceptance case: a class prompt without a class data folder.
            "ClassDataDir" => good with { ClassPrompt = "a dog" },
            "CaptionExtension" => good with { CaptionExtension = "." },
            "concepts[0].repeats" => new DatasetOptions { Concepts = [new ConceptSpec(folder.Root, Repeats: 0)] },
            _ => new DatasetOptions { Concepts = [new ConceptSpec(folder.Root, ClassPrompt: "a dog", NumClassImages: 4)] },
        };
        TrainingDataset.Scan(good);
        Assert.Equal(field, Assert.Throws<DatasetException>(() => TrainingDataset.Scan(bad)).Field);
    }

    [Fact]
    public void ConceptsListIsReadWithFoldersRelativeToIt()
    {
        using var folder = new DataTestFolder();
        var json = folder.Text("list/concepts.json", """
            [
              {"instance_prompt": "photo of sks dog", "class_prompt": "photo of a dog", "instance_data_dir": "../dog",
               "class_data_dir": "../dog_class", "num_class_images": 3, "repeats": 2, "save_sample_prompt": "ignored"},
              {"instance_prompt": "photo of zwx cat", "instance_data_dir": "/abs/cat"}
            ]
            """);
        var concepts = DatasetOptions.ReadConcepts(json);
        Assert.Equal(2, concepts.Count);
        Assert.Equal(new ConceptSpec(folder.PathOf("dog"), "photo of sks dog", "photo of a dog", folder.PathOf("dog_class"), 2, 3), concepts[0]);
        Assert.Equal(new ConceptSpec(Path.GetFullPath("/abs/cat"), "photo of zwx cat"), concepts[1]);

        var bad = folder.Text("bad.json", """[{"instance_data_dir": "x", "repeats": "many"}]""");
        Assert.Equal("concepts[0].repeats", Assert.Throws<DatasetException>(() => DatasetOptions.ReadConcepts(bad)).Field);
        var noDir = folder.Text("nodir.json", """[{"instance_prompt": "x"}]""");
        Assert.Equal("concepts[0].instance_data_dir", Assert.Throws<DatasetException>(() => DatasetOptions.ReadConcepts(noDir)).Field);
        var notJson = folder.Text("broken.json", "[{");
        Assert.Equal("concepts", Assert.Throws<DatasetException>(() => DatasetOptions.ReadConcepts(notJson)).Field);
    }

    [Fact]
    public void ConceptsFromTheListBecomeItemsWithTheirPromptsAndClassImages()
    {
        using var folder = new DataTestFolder();
        folder.Image("dog/1.png", 64, 64);
        folder.Image("dog/2.png", 64, 64);
        folder.Image("dog_class/c1.png", 64, 64);
        folder.Image("dog_class/c2.png", 64, 64);
        folder.Text("dog_class/c2.txt", "a dog on grass");
        folder.Image("cat/1.png", 64, 64);
        var dataset = TrainingDataset.Scan(new DatasetOptions
        {
            InstancePrompt = "default prompt",
            Concepts =
            [
                new ConceptSpec(folder.PathOf("dog"), "sks dog", "a dog", folder.PathOf("dog_class"), Repeats: 3, NumClassImages: 5),
                new ConceptSpec(folder.PathOf("cat")),
            ],
        });
        Assert.Equal(["sks dog", "sks dog", "default prompt"], dataset.Items.Select(i => i.Caption));
        Assert.Equal([3, 3, 1], dataset.Items.Select(i => i.Repeats));
        Assert.Equal(7, dataset.ExamplesPerEpoch);
        Assert.Equal(["a dog", "a dog on grass"], dataset.PriorItems.Select(i => i.Caption));
        Assert.All(dataset.PriorItems, i => Assert.True(i.IsPrior));
        Assert.All(dataset.PriorItems, i => Assert.Equal(folder.PathOf("dog"), i.Concept));
        var missing = Assert.Single(dataset.MissingClassImages());
        Assert.Equal((folder.PathOf("dog"), 3), (missing.Concept.InstanceDataDir, missing.Missing));
    }

    [Fact]
    public void ClassFolderIsCappedAtNumClassImagesAndMayNotExistYet()
    {
        using var folder = new DataTestFolder();
        folder.Image("data/a.png", 64, 64);
        for (int i = 0; i < 4; i++) folder.Image($"data/class/{i}.png", 64, 64);
        // The class folder inside the data folder is not taken for an N_name sub-folder.
        var capped = TrainingDataset.Scan(new DatasetOptions
        {
            DataDir = folder.PathOf("data"), ClassDataDir = folder.PathOf("data/class"), ClassPrompt = "a cube", NumClassImages = 2,
        });
        Assert.Equal(["0.png", "1.png"], capped.PriorItems.Select(i => Path.GetFileName(i.Path)));
        Assert.Empty(capped.MissingClassImages());
        Assert.Empty(capped.Skipped);

        var toGenerate = TrainingDataset.Scan(new DatasetOptions
        {
            DataDir = folder.PathOf("data"), ClassDataDir = folder.PathOf("generated"), ClassPrompt = "a cube", NumClassImages = 6,
        });
        Assert.Empty(toGenerate.PriorItems);
        var (concept, count) = Assert.Single(toGenerate.MissingClassImages());
        Assert.Equal((folder.PathOf("generated"), "a cube", 6), (concept.ClassDataDir, concept.ClassPrompt, count));

        // Images to generate but no prompt to generate them with.
        var noPrompt = Assert.Throws<DatasetException>(() => TrainingDataset.Scan(new DatasetOptions
        {
            DataDir = folder.PathOf("data"), ClassDataDir = folder.PathOf("data/class"), NumClassImages = 9,
        }));
        Assert.Equal("ClassPrompt", noPrompt.Field);
        // A class folder that does not exist and nothing to generate.
        Assert.Equal("ClassDataDir", Assert.Throws<DatasetException>(() => TrainingDataset.Scan(new DatasetOptions
        {
            DataDir = folder.PathOf("data"), ClassDataDir = folder.PathOf("missing"), ClassPrompt = "a cube",
        })).Field);
    }
}
