using SdAppliance.Training.Data;

namespace SdAppliance.Training.Tests;

/// <summary>The Hugging Face image-folder layout (metadata.jsonl) the diffusers fine-tune and LoRA scripts read, and captions from file names.</summary>
public sealed class ImageFolderScanTests
{
    [Fact]
    public void AMetadataFileListsTheImagesAndTheCaptionColumnCaptionsThem()
    {
        using var folder = new DataTestFolder();
        folder.Image("train/0001.png", 64, 64);
        folder.Image("train/0002.png", 64, 64);
        folder.Image("0003.jpg", 64, 80);
        folder.Image("unlisted.png", 64, 64);
        folder.Text("metadata.jsonl", """
            {"file_name": "train/0002.png", "text": "a blue vase", "prompt": "vase"}
            {"file_name": "train/0001.png", "text": "a red cup", "prompt": "cup"}

            {"file_name": "0003.jpg", "prompt": "bowl"}
            {"file_name": "missing.png", "text": "gone"}
            {"file_name": "../outside.png", "text": "not ours"}
            """);
        var dataset = TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root, InstancePrompt = "a pot" });

        // The listed images in path order; a line without the column takes the fallback as an image without a caption file.
        Assert.Equal(["0003.jpg", "0001.png", "0002.png"], dataset.Items.Select(i => Path.GetFileName(i.Path)));
        Assert.Equal(["a pot", "a red cup", "a blue vase"], dataset.Items.Select(i => i.Caption));
        Assert.Equal([false, true, true], dataset.Items.Select(i => i.HasCaptionFile));
        Assert.Equal(["line 6 of metadata.jsonl names a file outside its folder", "listed in metadata.jsonl but not there"],
            dataset.Skipped.Select(s => s.Reason).Order(StringComparer.Ordinal));

        var byPrompt = TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root, CaptionColumn = "prompt" });
        Assert.Equal(["bowl", "cup", "vase"], byPrompt.Items.Select(i => i.Caption));
    }

    [Fact]
    public void ACaptionColumnTheFileDoesNotHaveIsRefusedListingItsColumns()
    {
        using var folder = new DataTestFolder();
        folder.Image("a.png", 64, 64);
        folder.Text("metadata.jsonl", """{"file_name": "a.png", "text": "a cup"}""");
        var error = Assert.Throws<DatasetException>(() => TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root, CaptionColumn = "caption" }));
        Assert.Equal("caption_column", error.Subject);
        Assert.Contains("'caption' is not a column", error.Message);
        Assert.Contains("its columns are file_name, text", error.Message);

        folder.Text("metadata.jsonl", "{\"text\": \"no file\"}\n");
        var noFile = Assert.Throws<DatasetException>(() => TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root }));
        Assert.Equal("data", noFile.Subject);
        Assert.Contains("line 1 has no file_name", noFile.Message);
    }

    [Fact]
    public void WithUseFilenameAsLabelAnImageWithoutACaptionIsCaptionedByItsName()
    {
        using var folder = new DataTestFolder();
        folder.Image("a red fox.png", 64, 64);
        folder.Image("b.png", 64, 64);
        folder.Text("b.txt", "its own caption");
        folder.Image("2_cat/tabby on a sofa.png", 64, 64);
        var dataset = TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root, InstancePrompt = "fallback", UseFilenameAsLabel = true });
        Assert.Equal(["a red fox", "its own caption", "tabby on a sofa"], dataset.Items.Select(i => i.Caption));
        var plain = TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root, InstancePrompt = "fallback" });
        Assert.Equal(["fallback", "its own caption", "cat"], plain.Items.Select(i => i.Caption));
    }
}
