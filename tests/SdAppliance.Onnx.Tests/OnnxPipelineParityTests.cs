using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Imaging;
using SdAppliance.Models.Loading;
using SdAppliance.Onnx.Export;
using SdAppliance.Onnx.Runtime;

namespace SdAppliance.Onnx.Tests;

/// <summary>
/// The acceptance of the ONNX Runtime backend: the tiny fixture model, exported network by network with the builders,
/// run by ONNX Runtime CPU through the same <see cref="StableDiffusionPipeline"/> as its libtorch modules, draws the same
/// picture from the same prompt, seed and sampler, within one 8-bit level (the networks agree within 1e-4; rounding to
/// uint8 can still land a value on the other side of a level).
/// </summary>
public sealed class OnnxPipelineParityTests : IDisposable
{
    private static readonly string TinySd = ToyOnnxExport.TinySd;
    private readonly string root = Directory.CreateTempSubdirectory("sdapp-onnx-parity-").FullName;

    public void Dispose() => Directory.Delete(root, recursive: true);

    private string Export(StableDiffusionModel model, OnnxExportOptions options, string name) =>
        BuilderExport.Export(model, TinySd, options, Path.Combine(root, name));

    private static RgbImage Draw(IDiffusionModel model, GenerationRequest request) => new StableDiffusionPipeline(model).Generate(request)[0].Image;

    private static void AssertWithinOneLevel(RgbImage expected, RgbImage actual, string what)
    {
        Assert.Equal((expected.Width, expected.Height), (actual.Width, actual.Height));
        var maxDiff = expected.Pixels.Zip(actual.Pixels, (a, b) => Math.Abs(a - b)).Max();
        Assert.True(maxDiff <= 1, $"{what}: max pixel difference {maxDiff}");
    }

    private static readonly GenerationRequest P1 = new()
    {
        Prompt = "a photo of a (red:1.2) circle on a blue background", NegativePrompt = "green", Seed = 42, Steps = 10, Sampler = "PNDMScheduler", CfgScale = 7.5,
    };

    [Fact]
    public void TheExportedFixtureDrawsWhatLibtorchDraws()
    {
        using var torchModel = ModelLoader.Load(TinySd);
        var folder = Export(torchModel, new OnnxExportOptions(), "optimum");
        using var onnx = OnnxDiffusionModel.Load(folder);
        Assert.Equal((torchModel.VaeScaleFactor, torchModel.DefaultResolution, torchModel.VaeScalingFactor, torchModel.LatentChannels),
            (onnx.VaeScaleFactor, onnx.DefaultResolution, onnx.VaeScalingFactor, onnx.LatentChannels));
        Assert.Equal(torchModel.Family, onnx.Family);

        AssertWithinOneLevel(Draw(torchModel, P1), Draw(onnx, P1), "txt2img, PNDM");
        // A multistep solver with a Karras schedule (fractional timesteps, a float timestep input) and clip skip 2:
        // final_layer_norm of the penultimate hidden state, its weights read from the exported graph.
        var karras = P1 with { Sampler = "DPM++ 2M Karras", Steps = 8, ClipSkip = 2, Seed = 7 };
        AssertWithinOneLevel(Draw(torchModel, karras), Draw(onnx, karras), "txt2img, DPM++ 2M Karras, clip skip 2");
        // img2img through optimum's latent_parameters: the posterior sampled with the seed's noise, as libtorch samples it.
        var init = Draw(torchModel, P1 with { Seed = 3 });
        var img2img = P1 with { InitImage = init, Strength = 0.6, Sampler = "Euler a", Seed = 9 };
        AssertWithinOneLevel(Draw(torchModel, img2img), Draw(onnx, img2img), "img2img, Euler a");
    }

    [Fact]
    public void DiffusersLayoutDrawsTheSameTxt2img()
    {
        using var torchModel = ModelLoader.Load(TinySd);
        var folder = Export(torchModel, new OnnxExportOptions { Layout = OnnxLayout.Diffusers }, "diffusers");
        using var onnx = OnnxDiffusionModel.Load(folder);
        Assert.True(onnx.EncoderSamplesInGraph);
        var request = P1 with { Sampler = "Euler", BatchSize = 2 };
        AssertWithinOneLevel(Draw(torchModel, request), Draw(onnx, request), "txt2img, diffusers layout");
    }

    [Fact]
    public void AnFp16ExportTakesAndGivesFloat16AtItsBoundaryAndDrawsNearlyTheSame()
    {
        using var torchModel = ModelLoader.Load(TinySd);
        var folder = Export(torchModel, new OnnxExportOptions { Precision = OnnxPrecision.Float16 }, "fp16");
        using var onnx = OnnxDiffusionModel.Load(folder);
        var expected = Draw(torchModel, P1);
        var actual = Draw(onnx, P1);
        // Each fp16 network's output is within about √nodes · 2^-10 of its scale (ExportRuns.Float16Tolerance): a few
        // thousandths of the [-1, 1] image after the VAE, under one 8-bit level (2/255 there), plus the rounding to uint8.
        var maxDiff = expected.Pixels.Zip(actual.Pixels, (a, b) => Math.Abs(a - b)).Max();
        Assert.True(maxDiff <= 2, $"fp16 export: max pixel difference {maxDiff}");
        Assert.Equal(64, Draw(onnx, P1 with { InitImage = expected, Strength = 0.5 }).Width);
    }
}
