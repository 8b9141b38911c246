using System.CommandLine;
using SdAppliance.Appliance.Storage;
using SdAppliance.Cli.Commands;
using SdAppliance.Imaging;
using SdAppliance.Onnx.Tests;
using static SdAppliance.Cli.Tests.GenerateCommandTests;

namespace SdAppliance.Cli.Tests;

/// <summary><c>sdapp caption</c> in-process on the tiny WD14 tagger; the tagging rules themselves are tested in SdAppliance.Onnx.Tests.</summary>
public sealed class CaptionCommandTests : IDisposable
{
    private readonly string temp = Directory.CreateTempSubdirectory("sdapp-caption-cli-").FullName;
    private readonly string tagger;
    private readonly string dataset;

    public CaptionCommandTests()
    {
        tagger = TinyTagger.Write(Path.Combine(temp, "wd-tiny"));
        dataset = Path.Combine(temp, "dataset");
        Save("10_red/a.png", 255, 0, 0);
        Save("5_green/b.png", 0, 255, 0);
        Directory.CreateDirectory(Path.Combine(dataset, "10_red"));
        File.WriteAllText(Path.Combine(dataset, "10_red", "broken.jpg"), "not a jpeg");
    }

    public void Dispose() => Directory.Delete(temp, recursive: true);

    private void Save(string relative, byte r, byte g, byte b)
    {
        var image = new RgbImage(24, 24, 3);
        for (var i = 0; i < 24 * 24; i++) (image.Pixels[i * 3], image.Pixels[i * 3 + 1], image.Pixels[i * 3 + 2]) = (r, g, b);
        var path = Path.Combine(dataset, relative);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        ImageCodec.Save(image, path);
    }

    private string Caption(string relative, string extension = ".txt") => File.ReadAllText(Path.Combine(dataset, Path.ChangeExtension(relative, extension)));

    [Fact]
    public void CaptionsEveryImageOfTheRepeatFoldersAndSaysWhatItSkipped()
    {
        var (exit, output, error) = Invoke("caption", "--tagger", tagger, "--data", dataset);

        Assert.True(exit == 0, error);
        Assert.Equal("red, dark, simple background, ^_^", Caption("10_red/a.png"));
        Assert.Equal("green, hatsune miku (vocaloid), dark, simple background, ^_^", Caption("5_green/b.png"));
        var lines = output.Trim().Split('\n');
        Assert.Equal(["10_red/a.png: red, dark, simple background, ^_^", "5_green/b.png: green, hatsune miku (vocaloid), dark, simple background, ^_^"], lines[..2]);
        Assert.StartsWith($"captioned 2 of 3 images in {dataset} (1 skipped) in ", lines[2]);
        Assert.StartsWith("skipped 10_red/broken.jpg: not a PNG, JPEG or WebP image", error.Trim());

        // Run again: the captions are there now, so they are kept unless --append or --overwrite says otherwise.
        File.WriteAllText(Path.Combine(dataset, "10_red", "a.txt"), "sks, red");
        (exit, output, error) = Invoke("caption", "--tagger", tagger, "--data", dataset, "--append", "--threshold", "0.25", "--character-threshold", "0.55",
            "--undesired-tags", "simple_background, ^_^");
        Assert.True(exit == 0, error);
        Assert.Equal("sks, red, dark, kaname madoka, looking at viewer, bright", Caption("10_red/a.png"));
        (exit, _, error) = Invoke("caption", "--tagger", tagger, "--data", dataset);
        Assert.Contains("skipped 10_red/a.png: has a caption already (append or overwrite to change it)", error);
        (exit, _, error) = Invoke("caption", "--tagger", tagger, "--data", dataset, "--overwrite", "--keep-underscores", "--use-rating-tags", "--caption-extension", ".caption");
        Assert.True(exit == 0, error);
        Assert.Equal("sensitive, red, dark, simple_background, ^_^", Caption("10_red/a.png", ".caption"));
    }

    [Fact]
    public void ATaggerIsFoundByNameInTheDataFolder()
    {
        var data = new DataFolder(Path.Combine(temp, "appdata")).Create();
        TinyTagger.Write(Path.Combine(data.Taggers, "tiny"));
        var root = new RootCommand { CaptionCommand.Create(() => data) };
        var (exit, _, error) = Invoke(root, "caption", "--tagger", "tiny", "--data", dataset);
        Assert.True(exit == 0, error);
        Assert.Equal("red, dark, simple background, ^_^", Caption("10_red/a.png"));
    }

    [Theory]
    [InlineData("--threshold", "1.5", "error: --threshold: 1.5 is not a score")]
    [InlineData("--caption-extension", ".png", "error: --caption-extension: '.png' is an image extension")]
    [InlineData("--append", "--overwrite", "error: --append and --overwrite do not go together")]
    public void BadFlagsFailWithOneLineAndWriteNothing(string flag, string value, string message)
    {
        var (exit, _, error) = Invoke("caption", "--tagger", tagger, "--data", dataset, flag, value);
        Assert.Equal(1, exit);
        Assert.StartsWith(message, error);
        Assert.Empty(Directory.EnumerateFiles(dataset, "*.txt", SearchOption.AllDirectories));
    }

    [Fact]
    public void AFolderThatIsNoTaggerIsNamedWithTheFix()
    {
        var (exit, _, error) = Invoke("caption", "--tagger", dataset, "--data", dataset);
        Assert.Equal(1, exit);
        Assert.Equal($"error: {Path.Combine(dataset, "model.onnx")}: is missing (a WD14 tagger folder holds model.onnx and selected_tags.csv; download both from the tagger's page)", error.Trim());
    }
}
