using SdAppliance.Formats;
using static SdAppliance.Cli.Tests.GenerateCommandTests;

namespace SdAppliance.Cli.Tests;

/// <summary><c>sdapp convert --to onnx</c> in-process; the folder itself is checked in SdAppliance.Onnx.Tests (PipelineExportTests).</summary>
public sealed class ConvertOnnxCommandTests : IDisposable
{
    private static readonly string TinySdxl = Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sdxl");

    private readonly string temp = Directory.CreateTempSubdirectory("sdapp-convert-onnx-").FullName;

    public void Dispose() => Directory.Delete(temp, recursive: true);

    [Fact]
    public void ExportsTheFolderWithALoraMergedAndPrintsWhatItWrote()
    {
        var lora = WriteLora(Path.Combine(temp, "style.safetensors"), "lora_unet_down_blocks_0_attentions_0_proj_in", 32, 32);
        var folder = Path.Combine(temp, "tiny-onnx");

        var (exit, output, error) = Invoke("convert", "--input", TinyFolder, "--output", folder, "--to", "onnx", "--lora", lora + ":0.7", "--attention", "fused");

        Assert.True(exit == 0, error);
        var lines = output.TrimEnd().Split('\n').Select(l => l.TrimEnd('\r')).ToList();
        Assert.StartsWith($"wrote {folder} (ONNX, optimum layout, SD 1.x, float32, 15 files, ", lines[0]);
        Assert.Contains(lines, l => l.StartsWith("  unet/model.onnx  ", StringComparison.Ordinal));
        Assert.Equal(15, lines.Count - 1);
        Assert.Contains("writing unet", error);
        Assert.True(File.Exists(Path.Combine(folder, "model_index.json")));
    }

    [Fact]
    public void AnExistingFolderIsRefusedBeforeTheModelIsLoaded()
    {
        var folder = Directory.CreateDirectory(Path.Combine(temp, "taken")).FullName;
        File.WriteAllText(Path.Combine(folder, "mine.txt"), "keep me");

        // The input is not even a model: the folder is refused first.
        var (exit, _, error) = Invoke("convert", "--input", Path.Combine(temp, "nothing"), "--output", folder, "--to", "onnx");

        Assert.Equal(1, exit);
        AssertOneLine(error);
        Assert.Contains($"{folder}: already exists", error);
        Assert.Equal(["mine.txt"], Directory.GetFileSystemEntries(folder).Select(Path.GetFileName));
    }

    [Theory]
    [InlineData("--layout", "diffusers", "error: --layout is for an ONNX export: add --to onnx")]
    [InlineData("--attention", "fused", "error: --attention is for an ONNX export: add --to onnx")]
    [InlineData("--fp16", null, "error: --fp16 is for an ONNX export: add --to onnx")]
    public void OnnxFlagsWithoutToOnnxAreRefused(string flag, string? value, string message)
    {
        string[] args = ["convert", "--input", TinyFolder, "--output", Path.Combine(temp, "x.safetensors"), flag];
        var (exit, _, error) = Invoke(value is null ? args : [.. args, value]);

        Assert.Equal(1, exit);
        Assert.Equal(message, error.Trim());
        Assert.Empty(Directory.GetFileSystemEntries(temp));
    }

    [Fact]
    public void HalfIsRefusedForOnnxWhichTakesFp16()
    {
        var (exit, _, error) = Invoke("convert", "--input", TinyFolder, "--output", Path.Combine(temp, "x"), "--to", "onnx", "--half");

        Assert.Equal(1, exit);
        Assert.Equal("error: --half is for checkpoint files; an ONNX export takes --fp16", error.Trim());
    }

    [Fact]
    public void SdxlInDiffusersLayoutIsRefusedNamingTheFlag()
    {
        var folder = Path.Combine(temp, "xl");
        var (exit, _, error) = Invoke("convert", "--input", TinySdxl, "--output", folder, "--to", "onnx", "--layout", "diffusers");

        Assert.Equal(1, exit);
        AssertOneLine(error);
        Assert.StartsWith("error: --layout: diffusers has no ONNX pipeline for SDXL", error);
        Assert.False(Directory.Exists(folder));
    }

    [Fact]
    public void ALoraThatMatchesNoLayerIsRefusedAndNothingIsWritten()
    {
        var lora = WriteLora(Path.Combine(temp, "elsewhere.safetensors"), "lora_unet_no_such_layer", 4, 4);
        var folder = Path.Combine(temp, "out");

        var (exit, _, error) = Invoke("convert", "--input", TinyFolder, "--output", folder, "--to", "onnx", "--lora", lora + ":0.7");

        Assert.Equal(1, exit);
        AssertOneLine(error);
        Assert.Contains("matches no layer of the model", error);
        Assert.Contains(lora, error);
        Assert.Equal(["elsewhere.safetensors"], Directory.GetFileSystemEntries(temp).Select(Path.GetFileName));
    }

    private static void AssertOneLine(string error)
    {
        Assert.StartsWith("error: ", error);
        Assert.Single(error.TrimEnd().Split('\n'));
        Assert.DoesNotContain("   at ", error);
    }

    /// <summary>A rank-2 LoRA on one 1x1 conv or Linear module of <paramref name="outFeatures"/> × <paramref name="inFeatures"/>.</summary>
    private static string WriteLora(string path, string module, long outFeatures, long inFeatures)
    {
        var down = new byte[2 * inFeatures * 4];
        var up = new byte[outFeatures * 2 * 4];
        new Random(5).NextBytes(up);
        for (var i = 0; i < up.Length; i += 4) BitConverter.TryWriteBytes(up.AsSpan(i), (i % 7) / 10f);
        for (var i = 0; i < down.Length; i += 4) BitConverter.TryWriteBytes(down.AsSpan(i), (i % 5) / 10f);
        SafetensorsFile.Write(path,
        [
            new SafetensorsTensor(module + ".lora_down.weight", SafetensorsDType.F32, [2, inFeatures, 1, 1], down),
            new SafetensorsTensor(module + ".lora_up.weight", SafetensorsDType.F32, [outFeatures, 2, 1, 1], up),
        ]);
        return path;
    }
}
