using System.Text.Json.Serialization;
using Parquet.Serialization;
using SdAppliance.Imaging;
using SdAppliance.Torch;
using SdAppliance.Training.Data;

namespace SdAppliance.Training.Tests;

/// <summary>Parquet datasets as the Hugging Face hub serves them: an image column of {bytes, path} structs and a text column.</summary>
public sealed class ParquetDatasetTests
{
    /// <summary>The hub's image feature: the encoded file and the name it had.</summary>
    private sealed class HubImage
    {
        [JsonPropertyName("bytes")] public byte[]? Bytes { get; set; }
        [JsonPropertyName("path")] public string? Path { get; set; }
    }

    private sealed class HubRow
    {
        [JsonPropertyName("image")] public HubImage? Image { get; set; }
        [JsonPropertyName("text")] public string? Text { get; set; }
        [JsonPropertyName("score")] public double Score { get; set; }
    }

    private static void WriteParquet(string path, IEnumerable<HubRow> rows)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        ParquetSerializer.SerializeAsync(rows, path).GetAwaiter().GetResult();
    }

    private static HubRow Row(RgbImage image, string? caption, string name) =>
        new() { Image = new HubImage { Bytes = ImageCodec.Encode(image), Path = name }, Text = caption, Score = 1 };

    [Fact]
    public void AParquetFileReadsAsTheSameItemsCaptionsAndPixelsAsTheImageFolder()
    {
        using var parquet = new DataTestFolder();
        using var images = new DataTestFolder();
        // Two images told apart by every pixel (shift 0 and 40), one wide so the crop matters.
        var first = DataTestFolder.Pattern(96, 64);
        var second = DataTestFolder.Pattern(64, 64, shift: 40);
        WriteParquet(parquet.PathOf("train.parquet"), [Row(first, "a red cup", "cup.png"), Row(second, "a blue vase", "vase.png")]);
        ImageCodec.Save(first, images.PathOf("0.png"));
        images.Text("0.txt", "a red cup");
        ImageCodec.Save(second, images.PathOf("1.png"));
        images.Text("1.txt", "a blue vase");

        var fromParquet = TrainingDataset.Scan(new DatasetOptions { DataDir = parquet.Root, Resolution = 64 });
        var fromFolder = TrainingDataset.Scan(new DatasetOptions { DataDir = images.Root, Resolution = 64 });

        Assert.Empty(fromParquet.Skipped);
        Assert.Equal(["a red cup", "a blue vase"], fromParquet.Items.Select(i => i.Caption));
        Assert.Equal(fromFolder.Items.Select(i => i.Caption), fromParquet.Items.Select(i => i.Caption));
        Assert.Equal(fromFolder.Items.Select(i => (i.Width, i.Height, i.Repeats, i.HasCaptionFile)), fromParquet.Items.Select(i => (i.Width, i.Height, i.Repeats, i.HasCaptionFile)));
        // PNG is lossless, so the decoded rows are the very pixels written, and the training crops match bit for bit.
        for (int i = 0; i < 2; i++)
        {
            Assert.Equal(ImageCodec.Load(fromFolder.Items[i].Path).Pixels, ImageCodec.Load(fromParquet.Items[i].Path).Pixels);
            var example = new TrainingExample(fromParquet.Items[i], 64, 64, false, 16, 0, "");
            using var fromRow = LatentCache.LoadPixels(example);
            using var fromFile = LatentCache.LoadPixels(example with { Item = fromFolder.Items[i] });
            Assert.Equal(fromFile.ToArray<float>(), fromRow.ToArray<float>());
        }
        Assert.Equal(first.Pixels, ImageCodec.Load(fromParquet.Items[0].Path).Pixels);

        // The LoRA metadata's dataset folder of a row is its Parquet file's name, as an image's is its folder's.
        Assert.Equal("train", ParquetImages.DatasetFolderName(fromParquet.Items[0].Path));
        Assert.Equal(Path.GetFileName(images.Root), ParquetImages.DatasetFolderName(fromFolder.Items[0].Path));

        // A second scan finds the images written by the first and writes nothing again.
        var written = File.GetLastWriteTimeUtc(fromParquet.Items[0].Path);
        var again = TrainingDataset.Scan(new DatasetOptions { DataDir = parquet.Root, Resolution = 64 });
        Assert.Equal(fromParquet.Items.Select(i => i.Path), again.Items.Select(i => i.Path));
        Assert.Equal(written, File.GetLastWriteTimeUtc(again.Items[0].Path));
    }

    [Fact]
    public void TheHubsDataTrainFilesAreReadAndARowWithoutACaptionFallsBack()
    {
        using var folder = new DataTestFolder();
        WriteParquet(folder.PathOf("data/train-00000-of-00002.parquet"), [Row(DataTestFolder.Pattern(64, 64), "first", "a.png")]);
        WriteParquet(folder.PathOf("data/train-00001-of-00002.parquet"), [Row(DataTestFolder.Pattern(64, 64, 9), null, "a tabby cat.jpg")]);
        // The test split is not training data.
        WriteParquet(folder.PathOf("data/test-00000-of-00001.parquet"), [Row(DataTestFolder.Pattern(64, 64, 3), "held out", "t.png")]);

        var dataset = TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root, InstancePrompt = "a cat" });
        Assert.Equal(["first", "a cat"], dataset.Items.Select(i => i.Caption));
        Assert.Equal([true, false], dataset.Items.Select(i => i.HasCaptionFile));
        Assert.Empty(dataset.Skipped);  // the data folder is the Parquet files' folder, not a kohya folder to complain about

        // use_filename_as_label names an uncaptioned row by the file name it was stored with.
        var labelled = TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root, UseFilenameAsLabel = true });
        Assert.Equal(["first", "a tabby cat"], labelled.Items.Select(i => i.Caption));
    }

    [Fact]
    public void AMissingColumnIsRefusedNamingTheFileAndListingItsColumns()
    {
        using var folder = new DataTestFolder();
        var file = folder.PathOf("train.parquet");
        WriteParquet(file, [Row(DataTestFolder.Pattern(64, 64), "a cup", "a.png")]);

        var caption = Assert.Throws<DatasetException>(() => TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root, CaptionColumn = "caption" }));
        Assert.Equal("caption_column", caption.Subject);
        Assert.Equal($"caption_column: 'caption' is not a text column of '{file}'; its columns are image, text, score", caption.Message);

        var image = Assert.Throws<DatasetException>(() => TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root, ImageColumn = "picture" }));
        Assert.Equal("image_column", image.Subject);
        Assert.Equal($"image_column: 'picture' is not a column of '{file}'; its columns are image, text, score", image.Message);

        var notImages = Assert.Throws<DatasetException>(() => TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root, ImageColumn = "text" }));
        Assert.Contains("'text' in '" + file + "' holds no image bytes", notImages.Message);
    }

    [Fact]
    public void AChangedParquetFileGetsFreshImagesAndTheStaleOnesGo()
    {
        using var folder = new DataTestFolder();
        var file = folder.PathOf("train.parquet");
        WriteParquet(file, [Row(DataTestFolder.Pattern(64, 64), "old", "a.png")]);
        var before = TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root });
        var oldFolder = Path.GetDirectoryName(before.Items[0].Path)!;

        // Another image under the same row number: the file's size and time differ, so its images are written anew.
        WriteParquet(file, [Row(DataTestFolder.Pattern(64, 64, shift: 100), "new", "a.png")]);
        File.SetLastWriteTimeUtc(file, File.GetLastWriteTimeUtc(file).AddMinutes(1));
        var after = TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root });

        Assert.Equal(["new"], after.Items.Select(i => i.Caption));
        Assert.NotEqual(oldFolder, Path.GetDirectoryName(after.Items[0].Path));
        Assert.False(Directory.Exists(oldFolder));
        Assert.Equal(DataTestFolder.Pattern(64, 64, shift: 100).Pixels, ImageCodec.Load(after.Items[0].Path).Pixels);
    }

    [Fact]
    public void AFileThatIsNotParquetIsRefusedNamingIt()
    {
        using var folder = new DataTestFolder();
        var file = folder.Bytes("train.parquet", "PAR1 but not really a parquet file"u8.ToArray());
        var error = Assert.Throws<DatasetException>(() => TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root }));
        Assert.Equal("data", error.Subject);
        Assert.StartsWith($"data: '{file}' cannot be read as Parquet: ", error.Message);
    }

    [Fact]
    public void ARowThatIsNoImageIsSkippedWithItsNumber()
    {
        using var folder = new DataTestFolder();
        var file = folder.PathOf("train.parquet");
        WriteParquet(file,
        [
            Row(DataTestFolder.Pattern(64, 64), "good", "a.png"),
            new HubRow { Image = new HubImage { Bytes = "GIF89a not ours"u8.ToArray(), Path = "b.gif" }, Text = "gif" },
            new HubRow { Image = null, Text = "empty" },
        ]);
        var dataset = TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root });
        Assert.Equal(["good"], dataset.Items.Select(i => i.Caption));
        Assert.Equal([(file + "#1", "row 1's image is not PNG, JPEG or WebP (convert the dataset's images)"), (file + "#2", "row 2 has no image bytes in 'image'")],
            dataset.Skipped.Select(s => (s.Path, s.Reason)));
    }
}
