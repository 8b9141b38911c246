using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;
using static SdAppliance.Cli.Tests.GenerateCommandTests;

namespace SdAppliance.Cli.Tests;

/// <summary><c>sdapp convert</c> in-process; the byte-level checks of the conversion itself are in SdAppliance.Models.Tests.</summary>
public sealed class ConvertCommandTests : IDisposable
{
    private readonly string temp = Directory.CreateTempSubdirectory("sdapp-convert-cli-").FullName;

    public void Dispose() => Directory.Delete(temp, recursive: true);

    [Fact]
    public void SingleFileToFolderThenGenerateGivesTheReferenceImage()
    {
        var folder = Path.Combine(temp, "tiny");
        var (exit, output, error) = Invoke("convert", "--input", TinyLdm, "--output", folder, "--config", TinyFolder);

        Assert.True(exit == 0, error);
        Assert.Equal($"wrote {folder} (diffusers folder, SD 1.x, 600 tensors)", output.Trim());
        Assert.Equal("converted 600 tensors in", error[..24]);
        Assert.True(File.Exists(Path.Combine(folder, "model_index.json")));

        var png = Path.Combine(temp, "p1.png");
        (exit, _, error) = Invoke(["generate", "--model", folder, .. P1, "--output", png]);
        Assert.True(exit == 0, error);
        AssertLooksLikeP1(png);
        Assert.Equal("tiny", ParametersOf(png)["Model"]);
    }

    [Fact]
    public void FolderToHalfCkptAndBack()
    {
        var ckpt = Path.Combine(temp, "tiny.ckpt");
        var (exit, output, error) = Invoke("convert", "--input", TinyFolder, "--output", ckpt, "--half");
        Assert.True(exit == 0, error);
        Assert.Equal($"wrote {ckpt} (ckpt file, SD 1.x, 600 tensors, float16)", output.Trim());
        using (var checkpoint = TorchCheckpoint.Open(ckpt))
            Assert.All(checkpoint.StateDict().Values, t => Assert.Equal(SafetensorsDType.F16, t.DType));

        // --to wins over the extension-less name; a float16 file converts back to a float16 folder.
        var folder = Path.Combine(temp, "half-model");
        (exit, _, error) = Invoke("convert", "--input", ckpt, "--output", folder, "--to", "diffusers", "--config", TinyFolder);
        Assert.True(exit == 0, error);
        using var unet = SafetensorsFile.Open(Path.Combine(folder, "unet", "diffusion_pytorch_model.safetensors"));
        Assert.All(unet.Tensors, t => Assert.Equal(SafetensorsDType.F16, t.DType));
        Assert.Contains("\"torch_dtype\": \"float16\"", File.ReadAllText(Path.Combine(folder, "text_encoder", "config.json")));
    }

    [Fact]
    public void ToSafetensorsFromTheExtension()
    {
        var file = Path.Combine(temp, "tiny.safetensors");
        var (exit, _, error) = Invoke("convert", "-i", TinyFolder, "-o", file);
        Assert.True(exit == 0, error);
        Assert.Equal(File.ReadAllBytes(TinyLdm), File.ReadAllBytes(file));
    }

    [Theory]
    [InlineData("--to", "ckpt", "must be named .ckpt")]
    [InlineData("--config", "no-such-folder", "--config: 'no-such-folder' is not a folder")]
    public void BadRequestsFailWithOneLine(string option, string value, string message)
    {
        var (exit, _, error) = Invoke("convert", "--input", TinyFolder, "--output", Path.Combine(temp, "x.safetensors"), option, value);

        Assert.Equal(1, exit);
        Assert.StartsWith("error: ", error);
        Assert.Contains(message, error);
        Assert.DoesNotContain("   at ", error);
        Assert.Empty(Directory.GetFileSystemEntries(temp));
    }

    [Fact]
    public void ANonStandardFileWithoutConfigSaysToPassIt()
    {
        var (exit, _, error) = Invoke("convert", "--input", TinyLdm, "--output", Path.Combine(temp, "tiny"));

        Assert.Equal(1, exit);
        Assert.StartsWith("error: ", error);
        Assert.Contains("pass --config", error);
        Assert.Empty(Directory.GetFileSystemEntries(temp));
    }
}
