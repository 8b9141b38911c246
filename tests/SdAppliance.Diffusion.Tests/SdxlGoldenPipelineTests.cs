using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Imaging;
using SdAppliance.Models.Loading;

namespace SdAppliance.Diffusion.Tests;

/// <summary>
/// The three SDXL pipeline runs of the reference (fixtures README, "SDXL": 64x64 on tiny-sdxl), an empty negative
/// prompt being diffusers' None (zeros, force_zeros_for_empty_prompt), x3 with its micro-conditioning.
/// </summary>
public sealed class SdxlGoldenPipelineTests : IClassFixture<SdxlGoldenPipelineTests.TinySdxl>
{
    public sealed class TinySdxl : IDisposable
    {
        public StableDiffusionModel Model { get; } = ModelLoader.Load(Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sdxl"));

        public void Dispose() => Model.Dispose();
    }

    private static readonly GenerationRequest X3MicroConditioned = new()
    {
        Prompt = "a bowl of lemons on a wooden table", Seed = 7, Sampler = "Euler", Steps = 10, CfgScale = 5, Width = 64, Height = 64,
        OriginalSize = new(1024, 768), CropsCoordsTopLeft = new(64, 32), TargetSize = new(768, 1024),
    };

    private readonly StableDiffusionPipeline pipeline;

    public SdxlGoldenPipelineTests(TinySdxl tiny) => pipeline = new StableDiffusionPipeline(tiny.Model);

    private static RgbImage Expected(string id) => ImageCodec.Load(Path.Combine(AppContext.BaseDirectory, "Fixtures", "sdxl", "pipelines", id + ".png"));

    // The README's bound: the loop in float64 moves at most one uint8 value by 1, so 2 or more is a real discrepancy.
    private static int MaxDifference(RgbImage expected, RgbImage image)
    {
        Assert.Equal((expected.Width, expected.Height), (image.Width, image.Height));
        return expected.Pixels.Zip(image.Pixels, (a, b) => Math.Abs(a - b)).Max();
    }

    [Theory]
    [InlineData("x1_euler", "a red fox sitting in fresh snow", "", 42, "Euler", 10, 5.0)]
    [InlineData("x2_dpmpp_karras_neg", "a lighthouse on a rocky coast at dusk", "blurry, low contrast", 1234, "DPM++ 2M Karras", 9, 7.0)]
    public void ReproducesTheReferenceImage(string id, string prompt, string negative, long seed, string sampler, int steps, double cfg)
    {
        var request = new GenerationRequest { Prompt = prompt, NegativePrompt = negative, Seed = seed, Sampler = sampler, Steps = steps, CfgScale = cfg, Width = 64, Height = 64 };
        var image = Assert.Single(pipeline.Generate(request)).Image;
        var diff = MaxDifference(Expected(id), image);
        Assert.True(diff <= 1, $"{id}: max pixel difference {diff}");
    }

    [Fact]
    public void MicroConditioningReproducesTheReferenceImage()
    {
        var image = Assert.Single(pipeline.Generate(X3MicroConditioned)).Image;
        var diff = MaxDifference(Expected("x3_euler_microcond"), image);
        Assert.True(diff <= 1, $"x3: max pixel difference {diff}");
    }

    [Fact]
    public void MicroConditioningChangesTheImage()
    {
        // The same run at diffusers' defaults (64, 64, 0, 0, 64, 64) must miss x3's image: the time ids reach the UNet.
        var defaults = X3MicroConditioned with { OriginalSize = null, CropsCoordsTopLeft = null, TargetSize = null };
        var image = Assert.Single(pipeline.Generate(defaults)).Image;
        Assert.True(MaxDifference(Expected("x3_euler_microcond"), image) > 1);
    }

    [Fact]
    public void TimeIdsAreInDiffusersOrderAndNegativesDefaultToThePrompts()
    {
        Assert.Equal([1024f, 768, 64, 32, 768, 1024], X3MicroConditioned.Conditioning(64, 64).TimeIds());
        Assert.Equal([1024f, 768, 64, 32, 768, 1024], X3MicroConditioned.NegativeConditioning(64, 64).TimeIds());
        Assert.Equal([64f, 64, 0, 0, 64, 64], new GenerationRequest().Conditioning(64, 64).TimeIds());
        var negative = X3MicroConditioned with { NegativeOriginalSize = new(512, 512), NegativeCropsCoordsTopLeft = new(0, 0) };
        Assert.Equal([512f, 512, 0, 0, 768, 1024], negative.NegativeConditioning(64, 64).TimeIds());
    }

    [Fact]
    public void NonPositiveSizesAndNegativeCropsAreRefusedByName()
    {
        var size = Assert.Throws<GenerationRequestException>(() => (X3MicroConditioned with { TargetSize = new(0, 1024) }).Validate());
        Assert.Equal("target_size", size.Field);
        var crop = Assert.Throws<GenerationRequestException>(() => (X3MicroConditioned with { NegativeCropsCoordsTopLeft = new(-1, 0) }).Validate());
        Assert.Equal("negative_crops_coords_top_left", crop.Field);
    }
}
