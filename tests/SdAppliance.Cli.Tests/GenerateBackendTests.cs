using SdAppliance.Imaging;
using SdAppliance.Models.Loading;
using SdAppliance.Onnx.Export;
using SdAppliance.Onnx.Tests;

namespace SdAppliance.Cli.Tests;

/// <summary><c>sdapp generate --backend</c>: ONNX exports on ONNX Runtime, the auto rule's choice printed, the refusals.</summary>
public sealed class GenerateBackendTests : IDisposable
{
    private readonly string temp = Directory.CreateTempSubdirectory("sdapp-generate-backend-").FullName;

    public void Dispose() => Directory.Delete(temp, recursive: true);

    private string Toy() => ToyOnnxExport.Write(Path.Combine(temp, "toy"), ToyLayout.Optimum);

    private static readonly string[] Quick = ["--prompt", "a red circle", "--seed", "7", "--steps", "3", "--sampler", "DDIM", "--width", "64", "--height", "64"];

    [Fact]
    public void AnExportRunsOnOnnxRuntimeAndAutoSaysSo()
    {
        var toy = Toy();
        var asked = Path.Combine(temp, "onnx.png");
        var (exit, output, error) = GenerateCommandTests.Invoke(["generate", "--model", toy, "--backend", "onnx", .. Quick, "--output", asked]);
        Assert.True(exit == 0, error);
        Assert.Equal($"seed 7: {asked}", output.Trim());
        Assert.StartsWith("backend: onnx (asked for)", error);
        Assert.Equal("toy", GenerateCommandTests.ParametersOf(asked)["Model"]);

        var auto = Path.Combine(temp, "auto.png");
        (exit, _, error) = GenerateCommandTests.Invoke(["generate", "--model", toy, .. Quick, "--output", auto]);
        Assert.True(exit == 0, error);
        Assert.StartsWith("backend: onnx (the model is an ONNX export only)", error);
        Assert.Equal(ImageCodec.Load(asked).Pixels, ImageCodec.Load(auto).Pixels);
    }

    [Theory]
    [InlineData("libtorch", "toy", "error: --backend: libtorch was asked, but")]
    [InlineData("onnx", "tiny-sd", "error: --backend: onnx was asked, but")]
    public void AnEngineTheModelCannotRunOnIsOneLine(string backend, string model, string start)
    {
        var path = model == "toy" ? Toy() : GenerateCommandTests.TinyFolder;
        var png = Path.Combine(temp, "x.png");
        var (exit, _, error) = GenerateCommandTests.Invoke(["generate", "--model", path, "--backend", backend, .. Quick, "--output", png]);
        Assert.Equal(1, exit);
        Assert.Single(error.TrimEnd().Split('\n'));
        Assert.Contains(start, error);
        Assert.False(File.Exists(png));
    }

    [Theory]
    [InlineData("--dtype", "float16", "--dtype applies to libtorch")]
    [InlineData("--vae-tiling", null, "--vae-tiling applies to libtorch")]
    [InlineData("--device", "cuda", "error: --device: cuda was asked, but this ONNX Runtime has no CUDAExecutionProvider")]
    public void FlagsAnExportCannotTakeAreRefused(string option, string? value, string message)
    {
        string[] flag = value is null ? [option] : [option, value];
        var (exit, _, error) = GenerateCommandTests.Invoke(["generate", "--model", Toy(), "--backend", "onnx", .. flag, .. Quick, "--output", Path.Combine(temp, "x.png")]);
        Assert.Equal(1, exit);
        Assert.Contains(message, error);
    }

    [Fact]
    public void ALoraAskedOfAnExportIsRefused()
    {
        var (exit, _, error) = GenerateCommandTests.Invoke(["generate", "--model", Toy(), "--backend", "onnx", "--prompt", "a circle <lora:style:0.7>", "--steps", "2",
            "--output", Path.Combine(temp, "x.png")]);
        Assert.Equal(1, exit);
        Assert.Contains("merge LoRAs when exporting", error);
    }

    /// <summary>
    /// The acceptance: the demo model exported to ONNX draws, on ONNX Runtime, what libtorch draws from the same
    /// seed, within 2 of 255 per pixel (the exported graphs match libtorch within 1e-4; a few levels of rounding remain).
    /// </summary>
    [Fact]
    public void TheExportedDemoModelDrawsWhatLibtorchDraws()
    {
        var demo = Path.Combine(ModelLoader.SearchRoots(new ModelLoadOptions())[0], "models", "demo");
        var export = Path.Combine(temp, "demo-onnx");
        using (var model = ModelLoader.Load(demo))
            OnnxPipelineExporter.Export(model, export, new OnnxExportOptions());
        var torchPng = Path.Combine(temp, "libtorch.png");
        var onnxPng = Path.Combine(temp, "onnx.png");
        string[] request = ["--prompt", "a red circle on a blue background", "--seed", "42", "--steps", "20", "--sampler", "DPM++ 2M Karras"];
        var (exit, _, error) = GenerateCommandTests.Invoke(["generate", "--model", demo, "--backend", "libtorch", .. request, "--output", torchPng]);
        Assert.True(exit == 0, error);
        (exit, _, error) = GenerateCommandTests.Invoke(["generate", "--model", export, "--backend", "onnx", .. request, "--output", onnxPng]);
        Assert.True(exit == 0, error);
        var a = ImageCodec.Load(torchPng).Pixels;
        var b = ImageCodec.Load(onnxPng).Pixels;
        var maxDiff = a.Zip(b, (x, y) => Math.Abs(x - y)).Max();
        Assert.True(maxDiff <= 2, $"max pixel difference {maxDiff}");
    }
}
