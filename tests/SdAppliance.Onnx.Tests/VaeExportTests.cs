using TensorElementType = Microsoft.ML.OnnxRuntime.Tensors.TensorElementType;
using SdAppliance.Models.Loading;
using SdAppliance.Models.Vae;
using SdAppliance.Onnx.Export;
using SdAppliance.Onnx.Graphs;
using SdAppliance.Torch;

namespace SdAppliance.Onnx.Tests;

/// <summary>
/// The VAE halves exported by <see cref="VaeOnnx"/>, run by ONNX Runtime CPU against our libtorch
/// <see cref="AutoencoderKL"/> of the tiny fixture (float32, within the 1e-4). Sizes whose latents are odd
/// exercise the nearest 2× resize and the asymmetric (0, 1, 0, 1) pad of the downsamplers.
/// </summary>
public sealed class VaeExportTests : IDisposable
{
    private const double Tolerance = 1e-4;
    private static readonly string TinySd = Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sd");
    private readonly string folder = Directory.CreateTempSubdirectory("sdapp-onnx-vae-").FullName;
    private readonly StableDiffusionModel model = ModelLoader.Load(TinySd);

    public void Dispose()
    {
        model.Dispose();
        Directory.Delete(folder, recursive: true);
    }

    private AutoencoderKL Vae => model.Vae;

    [Theory]
    [InlineData(AttentionForm.Standard)]
    [InlineData(AttentionForm.OnnxRuntimeFused)]
    public void DecoderMatchesLibtorch(AttentionForm attention)
    {
        var path = ExportRuns.SaveChecked(VaeOnnx.BuildDecoder(Vae, new OnnxExportOptions { Attention = attention }), folder, "vae_decoder");
        using var scope = torch.NewDisposeScope();
        using var g = new Generator(3);
        var latents = torch.Randn([2, 4, 5, 7], g);
        var expected = Vae.Decode(latents);

        var actual = ExportRuns.Run(path, ("latent_sample", latents)).Single();
        Assert.Equal("sample", actual.Name);
        var diff = ExportRuns.MaxDiff(actual.Value, expected, "sample");
        Assert.True(diff <= Tolerance, $"sample: max |ONNX − libtorch| = {diff:g3}");
    }

    [Theory]
    [InlineData(40, 56)]
    [InlineData(36, 44)] // 36 → 18 → 9: the third downsampler pads 9 to 10
    public void OptimumEncoderGivesTheMomentsOfLibtorch(int height, int width)
    {
        var path = ExportRuns.SaveChecked(VaeOnnx.BuildEncoder(Vae, new OnnxExportOptions()), folder, "vae_encoder");
        using var scope = torch.NewDisposeScope();
        using var g = new Generator(4);
        var images = torch.Rand([2, 3, height, width], g) * 2 - 1;
        var expected = Vae.EncodeMoments(images);

        var actual = ExportRuns.Run(path, ("sample", images)).Single();
        Assert.Equal("latent_parameters", actual.Name);
        var diff = ExportRuns.MaxDiff(actual.Value, expected, "latent_parameters");
        Assert.True(diff <= Tolerance, $"latent_parameters: max |ONNX − libtorch| = {diff:g3}");
    }

    /// <summary>
    /// diffusers' encoder draws mean + std · ε inside the graph with the runtime's randomness, so the test checks the
    /// draw, not its values: ε recovered with libtorch's posterior is standard normal (its mean within 5 standard errors
    /// of 0, its variance within 5 standard errors of 1), and two runs of one session draw differently (ONNX Runtime
    /// seeds an unseeded random node from the clock once per process; each run then continues its generator).
    /// </summary>
    [Fact]
    public void DiffusersEncoderSamplesThePosteriorWithTheRuntimesNoise()
    {
        var path = ExportRuns.SaveChecked(VaeOnnx.BuildEncoder(Vae, new OnnxExportOptions { Layout = OnnxLayout.Diffusers }), folder, "vae_encoder");
        using var scope = torch.NewDisposeScope();
        using var g = new Generator(5);
        var images = torch.Rand([2, 3, 64, 64], g) * 2 - 1;
        using var posterior = Vae.Encode(images);

        var runs = ExportRuns.RunRepeated(path, 2, ("sample", images));
        var (first, second) = (runs[0].Single(), runs[1].Single());
        Assert.Equal("latent_sample", first.Name);
        Assert.True(posterior.Mean.Shape.SequenceEqual(first.Value.Shape));
        Assert.NotEqual(first.Value.Values, second.Value.Values);

        var mean = posterior.Mean.ToArray<float>();
        var std = posterior.Std.ToArray<float>();
        var eps = first.Value.Values.Select((v, i) => (v - (double)mean[i]) / std[i]).ToArray();
        var n = eps.Length;
        var m = eps.Average();
        var variance = eps.Sum(e => (e - m) * (e - m)) / (n - 1);
        Assert.True(Math.Abs(m) < 5 / Math.Sqrt(n), $"ε has mean {m:g3} over {n} values");
        Assert.True(Math.Abs(variance - 1) < 5 * Math.Sqrt(2.0 / (n - 1)), $"ε has variance {variance:g3} over {n} values");
    }

    [Fact]
    public void DemoModelHalvesMatchLibtorch()
    {
        using var demo = ModelLoader.Load(ExportRuns.DemoModel);
        var decoderPath = ExportRuns.SaveChecked(VaeOnnx.BuildDecoder(demo.Vae, new OnnxExportOptions()), folder, "vae_decoder");
        var encoderPath = ExportRuns.SaveChecked(VaeOnnx.BuildEncoder(demo.Vae, new OnnxExportOptions()), folder, "vae_encoder");
        using var scope = torch.NewDisposeScope();
        using var g = new Generator(8);
        var images = torch.Rand([1, 3, 64, 64], g) * 2 - 1;
        var moments = demo.Vae.EncodeMoments(images);
        // The decoder gets what a pipeline gives it: a latent of this VAE, divided by nothing more (moments' mean).
        var latents = moments.Narrow(1, 0, 4).Contiguous();
        foreach (var (path, input, expected) in new[] { (encoderPath, ("sample", images), moments), (decoderPath, ("latent_sample", latents), demo.Vae.Decode(latents)) })
        {
            var actual = ExportRuns.Run(path, input).Single();
            var diff = ExportRuns.MaxDiff(actual.Value, expected, actual.Name);
            Assert.True(diff <= Tolerance, $"{actual.Name}: max |ONNX − libtorch| = {diff:g3}");
        }
    }

    [Fact]
    public void Float16HalvesPassTheCheckerAndRunWithinHalfPrecision()
    {
        var options = new OnnxExportOptions { Precision = OnnxPrecision.Float16 };
        var decoder = VaeOnnx.BuildDecoder(Vae, options);
        var encoder = VaeOnnx.BuildEncoder(Vae, options);
        var decoderPath = ExportRuns.SaveChecked(decoder, folder, "vae_decoder");
        var encoderPath = ExportRuns.SaveChecked(encoder, folder, "vae_encoder");

        using var scope = torch.NewDisposeScope();
        using var g = new Generator(6);
        var latents = torch.Randn([1, 4, 6, 6], g);
        var images = torch.Rand([1, 3, 48, 48], g) * 2 - 1;
        foreach (var (built, path, input, expected) in new[]
        {
            (decoder, decoderPath, ("latent_sample", latents), Vae.Decode(latents)),
            (encoder, encoderPath, ("sample", images), Vae.EncodeMoments(images)),
        })
        {
            var actual = ExportRuns.Run(path, input).Single();
            Assert.Equal(TensorElementType.Float16, actual.Value.Type);
            var tolerance = ExportRuns.Float16Tolerance(built, ExportRuns.MaxAbs(expected));
            var diff = ExportRuns.MaxDiff(actual.Value, expected, actual.Name);
            Assert.True(diff <= tolerance, $"{actual.Name}: max |fp16 ONNX − fp32 libtorch| = {diff:g3} > {tolerance:g3}");
        }

        // diffusers' sampling encoder in fp16: the draw, cast to fp16, lies within a few standard deviations of the mean.
        var sampling = ExportRuns.SaveChecked(VaeOnnx.BuildEncoder(Vae, options with { Layout = OnnxLayout.Diffusers }), folder, "vae_encoder_sampling");
        var drawn = ExportRuns.Run(sampling, ("sample", images)).Single().Value;
        Assert.Equal(TensorElementType.Float16, drawn.Type);
        using var posterior = Vae.Encode(images);
        var (mean, std) = (posterior.Mean.ToArray<float>(), posterior.Std.ToArray<float>());
        Assert.All(drawn.Values.Select((v, i) => Math.Abs(v - mean[i]) / (std[i] + 1e-3)), z => Assert.True(z < 8, $"a draw {z:g3} standard deviations off"));
    }
}
