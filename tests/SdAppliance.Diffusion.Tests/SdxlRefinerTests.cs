using System.Text.Json.Nodes;
using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Imaging;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.Conversion;
using SdAppliance.Models.Loading;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Unet;
using SdAppliance.Models.Vae;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using SdAppliance.Torch.Serialization;

namespace SdAppliance.Diffusion.Tests;

/// <summary>
/// The SDXL refiner: a tiny one in the refiner's shape (text_encoder_2 alone, a UNet whose cross attention is bigG's width
/// and whose added embedding takes 5 time ids), seeded random weights, written by our writer as a diffusers folder and as a
/// single file, loaded back; and tiny-sdxl handing its latents over to it at "refiner switch at", as diffusers'
/// denoising_end/denoising_start do.
/// </summary>
public sealed class SdxlRefinerTests : IDisposable
{
    private static readonly string TinySdxl = Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sdxl");
    private readonly string root = Directory.CreateTempSubdirectory("sdapp-refiner-").FullName;

    public void Dispose() => Directory.Delete(root, recursive: true);

    private string RefinerFolder => Path.Combine(root, "tiny-refiner");
    private string RefinerFile => Path.Combine(root, "tiny-refiner.safetensors");

    private static JsonObject Json(string path) => JsonNode.Parse(File.ReadAllText(path))!.AsObject();

    private void BuildTinyRefiner(int timeIds = 5) => TinyRefiner.Write(RefinerFolder, RefinerFile, timeIds);

    [Fact]
    public void TinyRefinerLoadsFromItsFolderAndFromItsSingleFileEqual()
    {
        BuildTinyRefiner();
        var index = Json(Path.Combine(RefinerFolder, "model_index.json"));
        Assert.Equal("StableDiffusionXLImg2ImgPipeline", index["_class_name"]!.GetValue<string>());
        Assert.Null(index["text_encoder"]![0]);
        Assert.True(index["requires_aesthetics_score"]!.GetValue<bool>());
        Assert.False(index["force_zeros_for_empty_prompt"]!.GetValue<bool>());
        Assert.False(Directory.Exists(Path.Combine(RefinerFolder, "text_encoder")));

        using var source = TensorFile.Open(RefinerFile);
        Assert.Contains(source.Shapes.Keys, k => k.StartsWith("conditioner.embedders.0.model.transformer.resblocks.", StringComparison.Ordinal));
        Assert.DoesNotContain(source.Shapes.Keys, k => k.StartsWith("conditioner.embedders.1.", StringComparison.Ordinal));
        Assert.Equal(ModelFamily.XlRefiner, LdmKeyMap.DetectFamily(source.Shapes));
        Assert.Equal(ModelFamily.XlRefiner, ModelLoader.Describe(RefinerFolder).Family);

        using var fromFolder = ModelLoader.Load(RefinerFolder);
        using var fromFile = ModelLoader.Load(RefinerFile, new ModelLoadOptions(ConfigDirectory: RefinerFolder));
        foreach (var model in new[] { fromFolder, fromFile })
        {
            Assert.Equal(ModelFamily.XlRefiner, model.Family);
            Assert.True(model.IsSdxl);
            Assert.True(((IDiffusionModel)model).RequiresAestheticsScore);
            Assert.Null(model.TextEncoder2);
            Assert.NotNull(model.TextEncoder.TextProjection);
            Assert.Equal(0, model.Tokenizer.PadId);  // tokenizer_2: OpenCLIP pads with "!"
            Assert.IsType<SdxlRefinerPromptEncoder>(model.PromptEncoder);
            Assert.Equal([ModelComponents.TextEncoder2], model.TextEncoders.Select(e => e.Component));
        }
        AssertSameWeights(fromFolder.Unet, fromFile.Unet);
        AssertSameWeights(fromFolder.Vae, fromFile.Vae);
        AssertSameWeights(fromFolder.TextEncoder, fromFile.TextEncoder);
    }

    private static void AssertSameWeights(Module expected, Module actual)
    {
        using var a = expected.StateDict();
        using var b = actual.StateDict();
        Assert.Equal(a.Keys.Order(StringComparer.Ordinal), b.Keys.Order(StringComparer.Ordinal));
        foreach (var (name, tensor) in a)
            Assert.True(tensor.ToBytes().AsSpan().SequenceEqual(b[name].ToBytes()), $"{name} differs between the folder and the single file");
    }

    [Fact]
    public void RefinerFolderWithTheBasesSixTimeIdUnetIsRefusedNamingTheField()
    {
        BuildTinyRefiner(timeIds: 6);
        var e = Assert.Throws<ModelConfigException>(() => ModelLoader.Load(RefinerFolder));
        Assert.Equal("projection_class_embeddings_input_dim", e.Field);
        Assert.Contains("5 time ids", e.Message, StringComparison.Ordinal);
        Assert.Contains("mixes the base's and the refiner's parts", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void RefinerTimeIdsAreOriginalSizeCropAndAestheticScore()
    {
        var micro = new GenerationRequest { OriginalSize = new(48, 40), CropsCoordsTopLeft = new(8, 4) }.Conditioning(64, 64);
        Assert.Equal([48f, 40f, 8f, 4f, 6f], micro.TimeIds(new GenerationRequest().AestheticScore));
        Assert.Equal([48f, 40f, 8f, 4f, 2.5f], micro.TimeIds(new GenerationRequest().NegativeAestheticScore));
        Assert.Equal(6, micro.TimeIds().Length);
    }

    private sealed class StepLatents : IProgress<GenerationProgress>, IDisposable
    {
        public List<(Tensor Latents, bool ByRefiner, int Total)> Steps { get; } = [];

        public void Report(GenerationProgress value) => Steps.Add((value.Latents!.Clone().DetachFromDisposeScope(), value.ByRefiner, value.TotalSteps));

        public void Dispose()
        {
            foreach (var s in Steps) s.Latents.Dispose();
        }
    }

    [Theory]
    [InlineData("Euler", 10, 0.8, 8)]            // leading timesteps 901…1: 901…201 are at or above the cutoff 200
    [InlineData("DPM++ 2M Karras", 9, 0.6, 5)]   // Karras sigmas: five of the nine timesteps are at or above the cutoff 400; the refiner's multistep scheduler starts its own history
    public void HandOffLatentsAtTheSwitchEqualTheBasePipelinesAtThatStep(string sampler, int steps, double switchAt, int baseSteps)
    {
        BuildTinyRefiner();
        using var baseModel = ModelLoader.Load(TinySdxl);
        using var refiner = ModelLoader.Load(RefinerFolder);
        var request = new GenerationRequest { Prompt = "a red circle", Seed = 3, Steps = steps, Sampler = sampler, CfgScale = 5, BatchSize = 2 };

        using var alone = new StepLatents();
        var baseImages = new StableDiffusionPipeline(baseModel).Generate(request, alone);
        using var handedOff = new StepLatents();
        var refined = new StableDiffusionPipeline(baseModel) { Refiner = refiner, RefinerHash = "0123456789" }
            .Generate(request with { RefinerSwitchAt = switchAt }, handedOff);

        Assert.Equal(steps, alone.Steps.Count);
        Assert.Equal(steps, handedOff.Steps.Count);
        Assert.All(handedOff.Steps, s => Assert.Equal(steps, s.Total));
        Assert.Equal(baseSteps, handedOff.Steps.Count(s => !s.ByRefiner));
        Assert.All(handedOff.Steps.Take(baseSteps), s => Assert.False(s.ByRefiner));
        // The same float path: equal to the last bit, at every step up to the switch.
        for (var i = 0; i < baseSteps; i++)
            Assert.True(alone.Steps[i].Latents.ToBytes().AsSpan().SequenceEqual(handedOff.Steps[i].Latents.ToBytes()), $"step {i + 1} differs before the switch");
        // After it the refiner's UNet draws something else.
        Assert.False(alone.Steps[baseSteps].Latents.ToBytes().AsSpan().SequenceEqual(handedOff.Steps[baseSteps].Latents.ToBytes()));

        Assert.Equal(2, refined.Count);
        Assert.All(refined, r => Assert.Equal((64, 64), (r.Image.Width, r.Image.Height)));
        Assert.NotEqual(baseImages[0].Image.Pixels, refined[0].Image.Pixels);
        var info = A1111Parameters.Parse(refined[0].Parameters);
        Assert.Equal("tiny-refiner [0123456789]", info["Refiner"]);
        Assert.Equal(A1111Parameters.FormatFloat(switchAt), info["Refiner switch at"]);
        Assert.Null(A1111Parameters.Parse(baseImages[0].Parameters)["Refiner"]);
    }

    [Fact]
    public void SecondOrderRefinerStartsAfterAWholeStep()
    {
        BuildTinyRefiner();
        using var baseModel = ModelLoader.Load(TinySdxl);
        using var refiner = ModelLoader.Load(RefinerFolder);
        using var steps = new StepLatents();
        var request = new GenerationRequest { Prompt = "a circle", Seed = 1, Steps = 4, Sampler = "DPM++ SDE", CfgScale = 1, RefinerSwitchAt = 0.5 };
        Assert.Single(new StableDiffusionPipeline(baseModel) { Refiner = refiner }.Generate(request, steps));
        // DPM++ SDE evaluates each step at its sigma and at a midpoint (7 timesteps for 4 steps: 751, mid, 501, mid, 251, mid, 1);
        // 4 lie below the cutoff 500, an even number that would start the refiner on a midpoint, so it takes 501 too, as
        // diffusers' get_timesteps does. The base runs what is at or above the cutoff (751, mid, 501), as its denoising_end does.
        Assert.Equal(5, steps.Steps.Count(s => s.ByRefiner));
        Assert.Equal(3, steps.Steps.Count(s => !s.ByRefiner));
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(1.0)]
    [InlineData(double.NaN)]
    public void SwitchOutsideTheOpenUnitIntervalIsRefused(double switchAt)
    {
        var e = Assert.Throws<GenerationRequestException>(() => new GenerationRequest { RefinerSwitchAt = switchAt }.Validate());
        Assert.Equal("refiner_switch_at", e.Field);
    }

    [Fact]
    public void SwitchWithoutARefinerIsRefused()
    {
        using var baseModel = ModelLoader.Load(TinySdxl);
        var e = Assert.Throws<GenerationRequestException>(() =>
            new StableDiffusionPipeline(baseModel).Generate(new GenerationRequest { Prompt = "x", Steps = 2, RefinerSwitchAt = 0.8 }));
        Assert.Equal("refiner_switch_at", e.Field);
    }
}
