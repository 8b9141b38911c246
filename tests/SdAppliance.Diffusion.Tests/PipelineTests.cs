using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Imaging;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;
using SdAppliance.Torch.Serialization;

namespace SdAppliance.Diffusion.Tests;

/// <summary>
/// The seed contract end to end: the tiny fixture model, a fixture's prompt, seed, sampler and
/// steps (CFG 7.5, empty negative prompt, 64x64) give the reference run's image.
/// </summary>
public sealed class PipelineTests : IClassFixture<PipelineTests.TinyModel>
{
    public sealed class TinyModel : IDisposable
    {
        public StableDiffusionModel Model { get; } = ModelLoader.Load(Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sd"));

        public void Dispose() => Model.Dispose();
    }

    private readonly StableDiffusionPipeline pipeline;

    public PipelineTests(TinyModel tiny) => pipeline = new StableDiffusionPipeline(tiny.Model);

    private static string Fixture(params string[] parts) => Path.Combine([AppContext.BaseDirectory, "Fixtures", .. parts]);

    [Theory]
    [InlineData("p1_pndm", "a photo of a red circle on a blue background", 42, "PNDMScheduler", 10)]
    [InlineData("p2_euler_a", "a green square next to a yellow triangle", 7, "Euler a", 12)]
    [InlineData("p3_dpmpp_karras", "a watercolor painting of a quiet harbor at sunset", 1234, "DPM++ 2M Karras", 15)]
    public void ReproducesTheReferenceImage(string id, string prompt, long seed, string sampler, int steps)
    {
        var result = pipeline.Generate(new GenerationRequest { Prompt = prompt, Seed = seed, Sampler = sampler, Steps = steps, CfgScale = 7.5 });
        var image = Assert.Single(result).Image;
        var expected = ImageCodec.Load(Fixture("pipelines", id + ".png"));
        Assert.Equal((expected.Width, expected.Height), (image.Width, image.Height));
        // The README's tolerance: float32 sums in another order drift the final latents by < 1e-3,
        // which moves a pixel by at most one step of 1/255.
        var maxDiff = expected.Pixels.Zip(image.Pixels, (a, b) => Math.Abs(a - b)).Max();
        Assert.True(maxDiff <= 1, $"{id}: max pixel difference {maxDiff}");
        Assert.Equal(seed, result[0].Seed);
    }

    [Fact]
    public void MicroConditioningIsRefusedForAModelThatIsNotSdxl()
    {
        var e = Assert.Throws<GenerationRequestException>(() => pipeline.Generate(new GenerationRequest { Prompt = "a red circle", Steps = 1, OriginalSize = new(1024, 1024) }));
        Assert.Equal("original_size", e.Field);
        Assert.Contains("tiny-sd is not an SDXL model", e.Message);
    }

    [Fact]
    public void ParametersTextIsWhatA1111Writes()
    {
        var result = pipeline.Generate(new GenerationRequest { Prompt = "a (red:1.2) circle", NegativePrompt = "blurry", Seed = 5, Steps = 2, Sampler = "euler" });
        var text = result[0].Parameters;
        Assert.Equal(text, result[0].Image.Text["parameters"]);
        var parsed = A1111Parameters.Parse(text);
        Assert.Equal("a (red:1.2) circle", parsed.Prompt);
        Assert.Equal("blurry", parsed.NegativePrompt);
        Assert.Equal("2", parsed["Steps"]);
        Assert.Equal("Euler", parsed["Sampler"]);
        Assert.Equal("7.0", parsed["CFG scale"]);
        Assert.Equal("5", parsed["Seed"]);
        Assert.Equal("64x64", parsed["Size"]);
        Assert.Equal("tiny-sd", parsed["Model"]);
    }

    [Fact]
    public void ImageIOfABatchIsImageZeroOfSeedPlusI()
    {
        var batch = pipeline.Generate(new GenerationRequest { Prompt = "a circle", Seed = 100, Steps = 3, Sampler = "Euler a", BatchSize = 2 });
        var second = pipeline.Generate(new GenerationRequest { Prompt = "a circle", Seed = 101, Steps = 3, Sampler = "Euler a" });
        Assert.Equal([100L, 101L], batch.Select(b => b.Seed));
        var maxDiff = batch[1].Image.Pixels.Zip(second[0].Image.Pixels, (a, b) => Math.Abs(a - b)).Max();
        Assert.True(maxDiff <= 1, $"batch item 1 differs from seed 101 alone by {maxDiff}");
        Assert.NotEqual(batch[0].Image.Pixels, batch[1].Image.Pixels);
    }

    [Fact]
    public void Img2ImgAtLowStrengthStaysNearTheEncodedImage()
    {
        var init = ImageCodec.Load(Fixture("pipelines", "p1_pndm.png"));
        var low = pipeline.Generate(new GenerationRequest { Prompt = "a circle", Seed = 3, Steps = 10, Sampler = "DDIM", InitImage = init, Strength = 0.1 })[0];
        var mid = pipeline.Generate(new GenerationRequest { Prompt = "a circle", Seed = 3, Steps = 10, Sampler = "DDIM", InitImage = init, Strength = 0.5 })[0];
        var high = pipeline.Generate(new GenerationRequest { Prompt = "a circle", Seed = 3, Steps = 10, Sampler = "DDIM", InitImage = init, Strength = 1.0 })[0];

        // What img2img starts from: the init image through the VAE, its posterior sampled with the
        // seed's generator (the tiny VAE's random weights do not reproduce the image itself).
        RgbImage reconstruction;
        using (Autograd.InferenceMode())
        using (var scope = torch.NewDisposeScope())
        using (var g = new Generator(3))
        {
            var model = pipeline.Model;
            using var posterior = model.EncodeImages(Images.ImageTensors.ToTensor(init));
            var latents = posterior.Sample(torch.Randn(posterior.Mean.Shape, g));
            reconstruction = Images.ImageTensors.ToImages(model.DecodeLatents(latents))[0];
        }
        static double MeanDiff(RgbImage a, RgbImage b) => a.Pixels.Zip(b.Pixels, (x, y) => Math.Abs(x - y)).Average();
        var lowDiff = MeanDiff(low.Image, reconstruction);
        var midDiff = MeanDiff(mid.Image, reconstruction);
        var highDiff = MeanDiff(high.Image, reconstruction);
        // The more of the schedule runs, the further from the start; one step at t = 1 stays close
        // (what remains comes from the random UNet's guided prediction, not from noise).
        Assert.True(lowDiff < midDiff && midDiff < highDiff && lowDiff < highDiff / 2, $"strength 0.1: {lowDiff}, 0.5: {midDiff}, 1.0: {highDiff}");
        Assert.Contains("Denoising strength: 0.1", low.Parameters);
    }

    [Fact]
    public void BadRequestsAreRefusedWithTheField()
    {
        Assert.Contains("multiples of 8", Assert.Throws<GenerationRequestException>(() => pipeline.Generate(new GenerationRequest { Width = 60 })).Message);
        Assert.Contains("unknown sampler 'fastest'", Assert.Throws<GenerationRequestException>(() => pipeline.Generate(new GenerationRequest { Sampler = "fastest" })).Message);
        Assert.Contains("steps", Assert.Throws<GenerationRequestException>(() => pipeline.Generate(new GenerationRequest { Steps = 0 })).Message);
        Assert.Contains("<lora:missing>", Assert.Throws<GenerationRequestException>(() => pipeline.Generate(new GenerationRequest { Prompt = "x <lora:missing:1>", Steps = 1 })).Message);
    }
}
