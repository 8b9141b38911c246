using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Diffusion.Prompts;
using SdAppliance.Diffusion.Schedulers;
using SdAppliance.Formats;
using SdAppliance.Imaging;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;
using SdAppliance.Torch.Serialization;
using static SdAppliance.Diffusion.Tests.SchedulerTestSupport;

namespace SdAppliance.Diffusion.Tests;

/// <summary>
/// The three SDXL pipeline runs of the reference (fixtures README, "SDXL": 64x64 on tiny-sdxl), an empty negative
/// prompt being diffusers' None (zeros, force_zeros_for_empty_prompt), x3 with its micro-conditioning: the image, and
/// on the way the schedule, the prompt conditioning and the latents after every step.
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

    /// <summary>Each run's request, in the README's table (an empty negative prompt is its "none").</summary>
    private static readonly Dictionary<string, GenerationRequest> Runs = new()
    {
        ["x1_euler"] = new() { Prompt = "a red fox sitting in fresh snow", Seed = 42, Sampler = "Euler", Steps = 10, CfgScale = 5, Width = 64, Height = 64 },
        ["x2_dpmpp_karras_neg"] = new()
        {
            Prompt = "a lighthouse on a rocky coast at dusk", NegativePrompt = "blurry, low contrast", Seed = 1234, Sampler = "DPM++ 2M Karras",
            Steps = 9, CfgScale = 7, Width = 64, Height = 64,
        },
        ["x3_euler_microcond"] = X3MicroConditioned,
    };

    public static TheoryData<string> RunIds => [.. Runs.Keys];

    /// <summary>
    /// The README's latent tolerance: the loop with float64 networks moves the final latents by at most 5e-5, so 1e-3
    /// leaves room for float32 sums in another order and is still far below what a wrong step changes.
    /// </summary>
    private const double LatentAtol = 1e-3;

    /// <summary>The text encoders' tolerance (README: atol 1e-5).</summary>
    private const double TextAtol = 1e-5;

    private readonly StableDiffusionPipeline pipeline;

    public SdxlGoldenPipelineTests(TinySdxl tiny) => pipeline = new StableDiffusionPipeline(tiny.Model);

    private static string Fixture(string id, string extension) => Path.Combine(AppContext.BaseDirectory, "Fixtures", "sdxl", "pipelines", id + extension);

    private static RgbImage Expected(string id) => ImageCodec.Load(Fixture(id, ".png"));

    /// <summary>A tensor of the run's golden file, copied out of the mapped file.</summary>
    private static Tensor Golden(string id, string name)
    {
        using var reader = TensorFile.Open(Fixture(id, ".safetensors"));
        using var mapped = reader.ReadTensor(name);
        return mapped.Clone();
    }

    // The README's bound: the loop in float64 moves at most one uint8 value by 1, so 2 or more is a real discrepancy.
    private static int MaxDifference(RgbImage expected, RgbImage image)
    {
        Assert.Equal((expected.Width, expected.Height), (image.Width, image.Height));
        return expected.Pixels.Zip(image.Pixels, (a, b) => Math.Abs(a - b)).Max();
    }

    [Theory]
    [MemberData(nameof(RunIds))]
    public void ReproducesTheReferenceImage(string id)
    {
        var image = Assert.Single(pipeline.Generate(Runs[id])).Image;
        var diff = MaxDifference(Expected(id), image);
        Assert.True(diff <= 1, $"{id}: max pixel difference {diff}");
    }

    [Theory]
    [MemberData(nameof(RunIds))]
    public void LatentsAfterEveryStepMatchTheReference(string id)
    {
        var steps = new List<Tensor>();
        try
        {
            pipeline.Generate(Runs[id], new CollectProgress(p => steps.Add(p.Latents!.Clone().DetachFromDisposeScope())));
            using var expected = Golden(id, "latents_after_each_step");
            Assert.Equal(expected.Size(0), steps.Count);
            for (var k = 0; k < steps.Count; k++)
            {
                using var step = expected.Narrow(0, k, 1).Squeeze(0);
                AssertClose(step, steps[k], $"{id}: latents after step {k + 1}", atol: LatentAtol, rtol: 0);
            }
            using var final = Golden(id, "latents_final");
            AssertClose(final, steps[^1], $"{id}: final latents", atol: LatentAtol, rtol: 0);
        }
        finally
        {
            foreach (var t in steps) t.Dispose();
        }
    }

    [Theory]
    [MemberData(nameof(RunIds))]
    public void TheScheduleIsTheReferences(string id)
    {
        // The sampler the request names, built from the model's scheduler_config.json as the pipeline builds it.
        using var scheduler = SchedulerRegistry.Create(Runs[id].Sampler, SchedulerConfig.FromJson(pipeline.Model.SchedulerConfig.ToJsonString()));
        scheduler.SetTimesteps(Runs[id].Steps);
        using var timesteps = Golden(id, "timesteps");
        using var expectedTimesteps = timesteps.To(DType.Float64);
        Assert.Equal(expectedTimesteps.ToArray<double>(), scheduler.TimestepValues);
        using var sigmas = Golden(id, "sigmas");
        AssertClose(sigmas, scheduler.Sigmas!, $"{id}: sigmas");
    }

    [Theory]
    [MemberData(nameof(RunIds))]
    public void PromptConditioningIsTheReferences(string id)
    {
        var request = Runs[id];
        using var scope = torch.NewDisposeScope();
        using var inference = Autograd.InferenceMode();
        var conditioner = new PromptConditioner(pipeline.Model, new EmbeddingLibrary(pipeline.Model.Tokenizer));
        var encoded = conditioner.Encode([request.Prompt, request.NegativePrompt]);
        AssertClose(Golden(id, "prompt_embeds"), encoded[0].PromptEmbeds, $"{id}: prompt_embeds", atol: TextAtol, rtol: 0);
        AssertClose(Golden(id, "pooled_prompt_embeds"), encoded[0].PooledPromptEmbeds!, $"{id}: pooled_prompt_embeds", atol: TextAtol, rtol: 0);
        var negative = Golden(id, "negative_prompt_embeds");
        var negativePooled = Golden(id, "negative_pooled_prompt_embeds");
        if (string.IsNullOrEmpty(request.NegativePrompt))
        {
            // diffusers' None: zeros, which the pipeline puts in place of the empty prompt's encoding.
            Assert.Equal(0, MaxAbsDiff(negative, torch.ZerosLike(negative)));
            Assert.Equal(0, MaxAbsDiff(negativePooled, torch.ZerosLike(negativePooled)));
            return;
        }
        AssertClose(negative, encoded[1].PromptEmbeds, $"{id}: negative_prompt_embeds", atol: TextAtol, rtol: 0);
        AssertClose(negativePooled, encoded[1].PooledPromptEmbeds!, $"{id}: negative_pooled_prompt_embeds", atol: TextAtol, rtol: 0);
    }

    [Fact]
    public void TheSingleFileGivesTheSameImage()
    {
        // diffusers' convert_diffusers_to_original_sdxl.py wrote it from tiny-sdxl/, whose configs and tokenizers describe it.
        var folder = Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sdxl");
        using var model = ModelLoader.Load(Path.Combine(AppContext.BaseDirectory, "Fixtures", "sdxl", "tiny-sdxl.ldm.safetensors"),
            new ModelLoadOptions(ConfigDirectory: folder));
        var image = Assert.Single(new StableDiffusionPipeline(model).Generate(Runs["x1_euler"])).Image;
        var diff = MaxDifference(Expected("x1_euler"), image);
        Assert.True(diff <= 1, $"single file, x1_euler: max pixel difference {diff}");
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
    public void ThePngInfoRecordsTheMicroConditioningAndTheDefaultsNot()
    {
        var x3 = A1111Parameters.Parse(Assert.Single(pipeline.Generate(X3MicroConditioned with { Steps = 1 })).Parameters);
        Assert.Equal(("768x1024", "64", "32", "1024x768"), (x3["Original size"], x3["Crop top"], x3["Crop left"], x3["Target size"]));
        var x1 = Assert.Single(pipeline.Generate(Runs["x1_euler"] with { Steps = 1 })).Parameters;
        Assert.DoesNotContain("size:", x1.Replace("Size:", "", StringComparison.Ordinal), StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("Crop", x1, StringComparison.Ordinal);
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
