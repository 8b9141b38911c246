using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Imaging;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Unet;
using SdAppliance.Onnx.Runtime;
using SdAppliance.Torch;
using DataType = Onnx.TensorProto.Types.DataType;

namespace SdAppliance.Onnx.Tests;

/// <summary>
/// The ONNX Runtime backend on hand-built exports (<see cref="ToyOnnxExport"/>) in each app's IO conventions, whose
/// arithmetic the tests predict: what the loader reads from the graphs, the UNet's binding across steps, the prompt
/// encoder's clip skip and emphasis, the VAE's two encoder outputs, the pipeline over all of it, and the refusals.
/// </summary>
public sealed class OnnxRuntimeBackendTests : IDisposable
{
    private readonly string root = Directory.CreateTempSubdirectory("sdapp-onnx-runtime-").FullName;

    public void Dispose() => Directory.Delete(root, recursive: true);

    private string Export(ToyLayout layout, string name = "model") => ToyOnnxExport.Write(Path.Combine(root, name), layout);

    public static TheoryData<string> Layouts => ["optimum", "diffusers", "onnxstack", "fp16", "int64-one", "float-scalar"];

    private static ToyLayout LayoutNamed(string name) => name switch
    {
        "optimum" => ToyLayout.Optimum,
        "diffusers" => ToyLayout.Diffusers,
        "onnxstack" => ToyLayout.OnnxStack,
        // diffusers' script with --fp16: every float input and output float16, the timestep too.
        "fp16" => ToyLayout.Diffusers with { HalfIo = true, TimestepType = DataType.Float16 },
        "int64-one" => ToyLayout.Optimum with { TimestepRank = 1 },
        "float-scalar" => ToyLayout.Optimum with { TimestepType = DataType.Float },
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };

    // fp16 keeps 11 significant bits: each rounding moves a value by at most 2^-11 of it; inputs, output and the
    // round trips inside make a few such roundings, so 4 · 2^-11 · (1 + |value|) bounds the difference.
    private static double Tolerance(ToyLayout layout, double value) =>
        layout.HalfIo || layout.RoundThroughHalf ? 4 * Math.Pow(2, -11) * (1 + Math.Abs(value)) : 1e-5 * (1 + Math.Abs(value));

    private static void AssertClose(Tensor expected, Tensor actual, Func<double, double> tolerance, string what)
    {
        Assert.Equal(expected.Shape, actual.Shape);
        var e = expected.Contiguous().ToArray<float>();
        var a = actual.Contiguous().ToArray<float>();
        for (var i = 0; i < e.Length; i++)
            Assert.True(Math.Abs(e[i] - a[i]) <= tolerance(e[i]), $"{what}[{i}]: expected {e[i]}, got {a[i]}");
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void UnetFollowsEachLayoutsTypesAndRanksAcrossSteps(string name)
    {
        var layout = LayoutNamed(name);
        using var model = OnnxDiffusionModel.Load(Export(layout));
        using var scope = torch.NewDisposeScope();
        using var g = new Generator(11);
        var hidden = torch.Randn([2, 77, ToyOnnxExport.Width], g);
        var expectedMean = hidden.Mean([1, 2], keepdim: true).Unsqueeze(-1);
        // Several steps over the same conditioning: the binding made at the first one must see each step's sample and
        // timestep (the timestep buffer is rewritten in place), and earlier predictions must stay as they were.
        var predictions = new List<(Tensor Expected, Tensor Actual)>();
        foreach (var t in new[] { 981.0, 501.0, 21.0 })
        {
            var sample = torch.Randn([2, 4, 8, 8], g);
            var prediction = model.PredictNoise(sample, t, hidden, null);
            Assert.Equal(DType.Float32, prediction.DType);
            predictions.Add((sample * 0.5 + t * 0.001 + expectedMean, prediction));
        }
        foreach (var (expected, actual) in predictions) AssertClose(expected, actual, v => Tolerance(layout, v), "out_sample");
    }

    [Fact]
    public void AnIntegerTimestepGraphGetsTheRoundedTimestep()
    {
        using var model = OnnxDiffusionModel.Load(Export(ToyLayout.Optimum));
        using var scope = torch.NewDisposeScope();
        var sample = torch.Zeros([1, 4, 2, 2]);
        var hidden = torch.Zeros([1, 77, ToyOnnxExport.Width]);
        // Karras schedules give fractional timesteps; an int64 graph cannot take them, so they round (0.6 → 1).
        var prediction = model.PredictNoise(sample, 700.6, hidden, null);
        Assert.Equal(0.701f, prediction.ToArray<float>()[0], 5);
    }

    [Fact]
    public void AnLcmExportTakesTheGuidanceEmbeddingAsTimestepCond()
    {
        using var model = OnnxDiffusionModel.Load(Export(ToyLayout.Optimum with { TimeCondProjDim = 8 }));
        Assert.Equal(8, model.TimeCondProjDim);
        using var scope = torch.NewDisposeScope();
        var sample = torch.Zeros([1, 4, 2, 2]);
        var hidden = torch.Zeros([1, 77, ToyOnnxExport.Width]);
        var cond = torch.Full([1, 8], 0.25);
        // 0.5 · 0 + 0.001 · 700 + mean(hidden) 0 + mean(timestep_cond) 0.25
        Assert.Equal(0.95f, model.PredictNoise(sample, 700, hidden, null, cond).ToArray<float>()[0], 5);
        Assert.Throws<ArgumentException>(() => model.PredictNoise(sample, 700, hidden, null));
        using var plain = OnnxDiffusionModel.Load(Export(ToyLayout.Optimum, "plain"));
        Assert.Null(plain.TimeCondProjDim);
    }

    [Fact]
    public void FamilyAndVaeNumbersComeFromTheConfigsElseFromTheGraphs()
    {
        using (var withConfigs = OnnxDiffusionModel.Load(Export(ToyLayout.Optimum, "configs")))
        {
            Assert.Equal(ModelFamily.V1, withConfigs.Family);
            Assert.Equal(0.5, withConfigs.VaeScalingFactor);  // the toy's vae_decoder/config.json
            Assert.Equal(8, withConfigs.VaeScaleFactor);
            Assert.Equal(4, withConfigs.LatentChannels);
            Assert.Equal(512, withConfigs.DefaultResolution);
            Assert.Equal("onnxruntime", withConfigs.Backend);
            Assert.Equal("configs", withConfigs.Name);
            Assert.Equal("epsilon", withConfigs.PredictionType);
            Assert.Equal(ToyOnnxExport.Layers, withConfigs.PromptEncoder.MaxClipSkip);
        }
        using (var bare = OnnxDiffusionModel.Load(Export(ToyLayout.OnnxStack with { Configs = false }, "bare"), new OnnxRuntimeOptions { PredictionType = "v_prediction" }))
        {
            Assert.Equal(ModelFamily.V1, bare.Family);  // encoder_hidden_states 8 wide: not SD 2.x's 1024
            Assert.Equal(0.18215, bare.VaeScalingFactor);
            Assert.Equal("v_prediction", bare.PredictionType);
        }
        using var xl = OnnxDiffusionModel.Load(Export(ToyLayout.Optimum with { Sdxl = true, Configs = false }, "xl"));
        Assert.Equal(ModelFamily.XlBase, xl.Family);
        Assert.True(xl.IsSdxl);
        Assert.NotNull(xl.Tokenizer2);
        Assert.Equal(0.13025, xl.VaeScalingFactor);
        Assert.Equal(1024, xl.DefaultResolution);
        Assert.Equal(ModelFamily.XlBase, OnnxDiffusionModel.Describe(Path.Combine(root, "xl")).Family);
    }

    private static PromptChunks TwoChunks()
    {
        var ids = new int[2][];
        var weights = new float[2][];
        for (var c = 0; c < 2; c++)
        {
            ids[c] = [.. Enumerable.Range(0, 77).Select(i => (i * 37 + c * 101 + 5) % 914)];
            weights[c] = [.. Enumerable.Range(0, 77).Select(i => i % 5 == 1 ? 1.1f : i % 7 == 3 ? 0.9f : 1f)];
        }
        return new PromptChunks(ids, weights);
    }

    // The toy's hidden_states.k for ids [chunks, 77]: ids · w_k.
    private static Tensor Hidden(PromptChunks prompt, int k)
    {
        using var w = torch.Tensor(ToyOnnxExport.LayerWeight(k), ToyOnnxExport.Width);
        using var ids = prompt.IdsTensor();
        using var asFloat = ids.To(DType.Float32);
        return asFloat.Unsqueeze(-1) * w;
    }

    private static Tensor FinalLayerNorm(Tensor x)
    {
        using var w = torch.Tensor(ToyOnnxExport.NormWeight, ToyOnnxExport.Width);
        using var b = torch.Tensor(ToyOnnxExport.NormBias, ToyOnnxExport.Width);
        return Functional.LayerNorm(x, [ToyOnnxExport.Width], w, b, 1e-5);
    }

    [Theory]
    [InlineData("optimum")]
    [InlineData("diffusers")]
    [InlineData("batch-of-one")]
    public void PromptEncoderAppliesClipSkipAndEmphasisAsLibtorchDoes(string name)
    {
        var layout = name == "batch-of-one" ? ToyLayout.Diffusers with { TextBatchOfOne = true } : LayoutNamed(name);
        using var model = OnnxDiffusionModel.Load(Export(layout));
        using var scope = torch.NewDisposeScope();
        var prompt = TwoChunks();
        using var weights = prompt.WeightsTensor();
        for (var clipSkip = 1; clipSkip <= 3; clipSkip++)
        {
            // ClipPromptEncoder's rule: final_layer_norm(hidden_states[-n]), emphasis per chunk, chunks one after the other.
            var expected = PromptEncoder.ApplyEmphasis(FinalLayerNorm(Hidden(prompt, ToyOnnxExport.Layers + 1 - clipSkip)), weights).Reshape(1, 154, ToyOnnxExport.Width);
            using var conditioning = model.PromptEncoder.Encode(prompt, clipSkip);
            Assert.Null(conditioning.PooledPromptEmbeds);
            // Layer norm output is of unit scale; fp32 arithmetic in two engines differs by a few ulps.
            AssertClose(expected, conditioning.PromptEmbeds, v => 1e-5 * (1 + Math.Abs(v)), $"clip skip {clipSkip}");
        }
    }

    [Fact]
    public void ClipSkipNeedsHiddenStatesAndTextualInversionVectorsAreRefused()
    {
        var folder = Export(ToyLayout.Optimum with { HiddenStates = false });
        using var model = OnnxDiffusionModel.Load(folder);
        using var scope = torch.NewDisposeScope();
        using var plain = model.PromptEncoder.Encode(TwoChunks(), 1);
        var refused = Assert.ThrowsAny<UserInputException>(() => model.PromptEncoder.Encode(TwoChunks(), 2));
        Assert.Contains(Path.Combine(folder, "text_encoder", "model.onnx"), refused.Message);
        Assert.Contains("hidden_states", refused.Message);

        var withVectors = TwoChunks() with { Embeddings = [new ChunkEmbedding(0, 1, torch.Zeros([1, ToyOnnxExport.Width]), null)] };
        var vectors = Assert.ThrowsAny<UserInputException>(() => model.PromptEncoder.Encode(withVectors, 1));
        Assert.Contains("textual-inversion", vectors.Message);
    }

    [Fact]
    public void SdxlConcatenatesBothEncodersPenultimateLayersAndPoolsTheSecond()
    {
        using var model = OnnxDiffusionModel.Load(Export(ToyLayout.Optimum with { Sdxl = true }));
        using var scope = torch.NewDisposeScope();
        var prompt = TwoChunks();
        using var weights = prompt.WeightsTensor();
        using var conditioning = model.PromptEncoder.Encode(prompt, prompt, 1);
        // SdxlPromptEncoder's rule: hidden_states[-(n + 1)] of each, no final norm, emphasis each, features concatenated.
        var each = PromptEncoder.ApplyEmphasis(Hidden(prompt, ToyOnnxExport.Layers - 1), weights);
        var expected = torch.Cat([each, each], -1).Reshape(1, 154, 2 * ToyOnnxExport.Width);
        AssertClose(expected, conditioning.PromptEmbeds, v => 1e-5 * (1 + Math.Abs(v)), "prompt_embeds");
        // text_embeds of the first chunk: the toy's 2 · last_hidden_state[:, 0].
        var pooled = (FinalLayerNorm(Hidden(prompt, ToyOnnxExport.Layers)) * 2).Narrow(0, 0, 1).Narrow(1, 0, 1).Squeeze(1);
        AssertClose(pooled, conditioning.PooledPromptEmbeds!, v => 1e-5 * (1 + Math.Abs(v)), "text_embeds");
        Assert.Equal(ToyOnnxExport.Layers - 1, model.PromptEncoder.MaxClipSkip);

        var sample = torch.Ones([2, 4, 2, 2]);
        var hidden = torch.Zeros([2, 77, 2 * ToyOnnxExport.Width]);
        var added = new UNetAddedConditions(torch.Full([2, ToyOnnxExport.PooledWidth], 0.25), torch.Tensor(new float[] { 64, 64, 0, 0, 64, 64, 32, 32, 0, 0, 32, 32 }, 2, 6));
        var prediction = model.PredictNoise(sample, 1, hidden, added).ToArray<float>();
        // 0.5 + 0.001 · t + mean(text_embeds) + 0.001 · mean(time_ids): 128/3 and 64/3 for the two rows.
        Assert.Equal(0.5 + 0.001 + 0.25 + 0.001 * 128 / 3.0, prediction[0], 4);
        Assert.Equal(0.5 + 0.001 + 0.25 + 0.001 * 64 / 3.0, prediction[^1], 4);
    }

    [Theory]
    [InlineData("optimum")]
    [InlineData("diffusers")]
    [InlineData("fp16")]
    public void VaeDecodesAndEncodesWhicheverPosteriorTheEncoderGives(string name)
    {
        var layout = LayoutNamed(name);
        using var model = OnnxDiffusionModel.Load(Export(layout));
        using var scope = torch.NewDisposeScope();
        using var g = new Generator(5);
        var latents = torch.Randn([1, 4, 2, 3], g);
        var decoded = model.DecodeLatents(latents);
        Assert.Equal([1L, 3, 16, 24], decoded.Shape);
        var z = latents.ToArray<float>();
        var x = decoded.ToArray<float>();
        for (var c = 0; c < 3; c++)
            for (var y = 0; y < 16; y++)
                for (var w = 0; w < 24; w++)
                {
                    var want = z[(c * 2 + y / 8) * 3 + w / 8];
                    Assert.True(Math.Abs(want - x[(c * 16 + y) * 24 + w]) <= Tolerance(layout, want), $"pixel {c},{y},{w}");
                }

        var pixels = torch.Rand([1, 3, 16, 16], g) * 2 - 1;
        using var posterior = model.EncodeImages(pixels);
        var mean = pixels.Reshape(1, 3, 2, 8, 2, 8).Mean([3, 5]);
        AssertClose(torch.Cat([mean, mean.Narrow(1, 0, 1)], 1), posterior.Mean, v => Tolerance(layout, v), "mean");
        Assert.Equal(layout.EncoderOutput == "latent_sample", model.EncoderSamplesInGraph);
        // latent_parameters: log-variance −2, so std e^-1, and the seed's noise moves the sample; a latent_sample graph
        // drew inside itself: no spread is left, and a sample is the graph's.
        var std = posterior.Std.ToArray<float>();
        Assert.All(std, s => Assert.Equal(model.EncoderSamplesInGraph ? 0 : Math.Exp(-1), s, 3));
    }

    [Fact]
    public void ThePipelineDrawsTheSameImageWhateverTheExportsConventions()
    {
        var request = new GenerationRequest { Prompt = "a (red:1.2) circle", NegativePrompt = "blue", Seed = 3, Steps = 4, Sampler = "DDIM", Width = 64, Height = 64, CfgScale = 7 };
        RgbImage Draw(ToyLayout layout, string name, GenerationRequest r)
        {
            using var model = OnnxDiffusionModel.Load(Export(layout, name));
            return new StableDiffusionPipeline(model).Generate(r)[0].Image;
        }
        var optimum = Draw(ToyLayout.Optimum, "optimum", request);
        Assert.True(optimum.Pixels.Distinct().Count() > 8, "the toy draws more than a flat picture");
        // int32 ids, a [batch] float timestep and an in-graph encoder: the same arithmetic, so the same bytes.
        Assert.Equal(optimum.Pixels, Draw(ToyLayout.Diffusers, "diffusers", request).Pixels);
        // fp16 inside: each value rounds by at most 2^-11 of itself, under a 1/255 step of the 8-bit picture.
        var onnxStack = Draw(ToyLayout.OnnxStack, "onnxstack", request);
        Assert.True(optimum.Pixels.Zip(onnxStack.Pixels, (a, b) => Math.Abs(a - b)).Max() <= 1, "fp16 graph within one level");

        // img2img: encoded with the seed's noise, so the same seed draws the same picture again.
        var init = request with { InitImage = optimum, Strength = 0.5 };
        Assert.Equal(Draw(ToyLayout.Optimum, "again", init).Pixels, Draw(ToyLayout.Optimum, "again2", init).Pixels);
    }

    [Fact]
    public void TheExportsFollowOnnx()
    {
        var folder = Export(ToyLayout.Optimum with { Sdxl = true });
        foreach (var component in new[] { "text_encoder", "text_encoder_2", "unet", "vae_decoder", "vae_encoder" })
            OnnxChecker.AssertValid(Path.Combine(folder, component, "model.onnx"));
    }

    // ---- refusals: one error naming the file and the fix ----

    [Fact]
    public void AFolderThatIsNotAnExportIsRefused()
    {
        var folder = Export(ToyLayout.Optimum);
        File.Delete(Path.Combine(folder, "unet", "model.onnx"));
        var e = Assert.ThrowsAny<UserInputException>(() => OnnxDiffusionModel.Load(folder));
        Assert.Contains(folder, e.Message);
        Assert.Contains("not an ONNX export", e.Message);
        Assert.ThrowsAny<UserInputException>(() => OnnxDiffusionModel.Load(Path.Combine(root, "nowhere")));
    }

    [Fact]
    public void AMissingNetworkIsNamed()
    {
        var folder = Export(ToyLayout.Optimum);
        var file = Path.Combine(folder, "text_encoder", "model.onnx");
        File.Delete(file);
        var e = Assert.ThrowsAny<UserInputException>(() => OnnxDiffusionModel.Load(folder));
        Assert.Contains(file, e.Message);
        Assert.Contains("missing", e.Message);
    }

    [Fact]
    public void ABrokenFileIsNamedWithTheFix()
    {
        var folder = Export(ToyLayout.Optimum);
        var file = Path.Combine(folder, "vae_decoder", "model.onnx");
        var bytes = File.ReadAllBytes(file);
        File.WriteAllBytes(file, bytes[..(bytes.Length / 2)]);
        var e = Assert.ThrowsAny<UserInputException>(() => OnnxDiffusionModel.Load(folder));
        Assert.Equal(file, e.Subject);
        Assert.Contains("export the model again", e.Message);
    }

    [Fact]
    public void AWrongInputNameIsNamedWithTheInputsTheGraphHas()
    {
        var folder = Export(ToyLayout.Optimum with { SampleName = "latents" });
        var e = Assert.ThrowsAny<UserInputException>(() => OnnxDiffusionModel.Load(folder));
        Assert.Equal(Path.Combine(folder, "unet", "model.onnx"), e.Subject);
        Assert.Contains("no input 'sample'", e.Message);
        Assert.Contains("latents", e.Message);
    }

    [Fact]
    public void AnOpsetTheRuntimeDoesNotImplementIsNamed()
    {
        var folder = Export(ToyLayout.Optimum with { Opset = 99 });
        var e = Assert.ThrowsAny<UserInputException>(() => OnnxDiffusionModel.Load(folder));
        Assert.EndsWith("model.onnx", e.Subject);
        Assert.Contains("opset", e.Message, StringComparison.OrdinalIgnoreCase);
        Assert.Contains($"opset {Graphs.OnnxGraph.DefaultOpset}", e.Fix);
    }

    [Fact]
    public void CudaWithoutItsProviderIsRefusedListingThoseThereAre()
    {
        var folder = Export(ToyLayout.Optimum);
        var e = Assert.ThrowsAny<UserInputException>(() => OnnxDiffusionModel.Load(folder, new OnnxRuntimeOptions { Provider = OnnxProvider.Cuda }));
        Assert.Equal("provider", e.Subject);
        Assert.Contains("CPUExecutionProvider", e.Message);
        Assert.Contains("OnnxRuntimeFlavor=cuda", e.Fix);
        Assert.ThrowsAny<UserInputException>(() => OnnxDiffusionModel.Load(folder, new OnnxRuntimeOptions { GraphOptimizationLevel = "maximal" }));
    }

    [Fact]
    public void ImageToImageWithoutAVaeEncoderIsRefused()
    {
        var folder = Export(ToyLayout.Optimum with { EncoderOutput = null });
        using var model = OnnxDiffusionModel.Load(folder);
        Assert.False(model.HasVaeEncoder);
        var request = new GenerationRequest { Prompt = "x", Seed = 1, Steps = 2, Sampler = "DDIM", InitImage = new RgbImage(64, 64, 3) };
        var e = Assert.ThrowsAny<UserInputException>(() => new StableDiffusionPipeline(model).Generate(request));
        Assert.Contains(Path.Combine(folder, "vae_encoder", "model.onnx"), e.Message);
    }

    [Fact]
    public void RuntimeLorasAreRefusedOnAnExport()
    {
        using var model = OnnxDiffusionModel.Load(Export(ToyLayout.Optimum));
        var request = new GenerationRequest { Prompt = "x <lora:style:0.7>", Seed = 1, Steps = 2, Sampler = "DDIM" };
        var e = Assert.ThrowsAny<UserInputException>(() => new StableDiffusionPipeline(model).Generate(request));
        Assert.Contains("onnxruntime", e.Message);
    }
}
