using SdAppliance.Formats;
using SdAppliance.Formats.Adapters;
using SdAppliance.Models.Adapters;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using SdAppliance.Torch.Serialization;
using SdAppliance.Training.Exports;
using SdAppliance.Training.Networks;
using static SdAppliance.Training.Tests.LoraTestSupport;

namespace SdAppliance.Training.Tests;

/// <summary>
/// LyCORIS's LoHa and LoKr and DoRA trained by our network: the tensors and shapes of the file on the real SD 1.5
/// architecture (built on the meta device), as LyCORIS writes them and A1111/ComfyUI read them, and on the tiny model
/// that the saved file, applied by the generation path, makes the image the attached network makes.
/// </summary>
[Collection(TinySdxlCollection.Name)]
public sealed class LycorisNetworkTests : IDisposable
{
    private readonly string folder = Directory.CreateTempSubdirectory("sdapp-lycoris-").FullName;

    public void Dispose() => Directory.Delete(folder, recursive: true);

    private const string Q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
    private const string K2 = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k";
    private const string Ff = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_0_proj";
    private const string ProjIn = "lora_unet_down_blocks_0_attentions_0_proj_in";
    private const string Conv1 = "lora_unet_down_blocks_1_resnets_0_conv1";

    private static Dictionary<string, long[]> Shapes(LoraNetworkOptions options)
    {
        var (unet, te, _) = MetaModel("sd15");
        using (unet)
        using (te)
        using (var network = LoraNetwork.Create(unet, te, null, options))
        using (var state = network.StateDict())
            return state.ToDictionary(kv => kv.Key, kv => kv.Value.Shape);
    }

    [Fact]
    public void Sd15LohaHasLycorisTensorNamesAndShapes()
    {
        var shapes = Shapes(new LoraNetworkOptions(NetworkDim: 4, NetworkAlpha: 2, ConvDim: 2) { Algorithm = LoraAlgorithm.Loha });
        // LyCORIS: w1_a, w2_a [out, dim]; w1_b, w2_b [dim, in·kh·kw] (a convolution's kernel flattened into the columns).
        Assert.Equal([320L, 4], shapes[Q + ".hada_w1_a"]);
        Assert.Equal([4L, 320], shapes[Q + ".hada_w1_b"]);
        Assert.Equal([320L, 4], shapes[Q + ".hada_w2_a"]);
        Assert.Equal([4L, 320], shapes[Q + ".hada_w2_b"]);
        Assert.Empty(shapes[Q + ".alpha"]);
        Assert.Equal([4L, 768], shapes[K2 + ".hada_w1_b"]);           // attn2 reads the 768-wide text
        Assert.Equal([2560L, 4], shapes[Ff + ".hada_w2_a"]);          // GEGLU: 2 × 4 × 320
        Assert.Equal([4L, 320], shapes[ProjIn + ".hada_w2_b"]);       // 1×1 conv: network_dim
        Assert.Equal([640L, 2], shapes[Conv1 + ".hada_w1_a"]);        // 3×3 conv: conv_dim 2
        Assert.Equal([2L, 320 * 9], shapes[Conv1 + ".hada_w1_b"]);
        // Five tensors a module, 278 modules (LoCon's count), nothing else.
        Assert.Equal(5 * 278, shapes.Count);
        Assert.DoesNotContain(shapes.Keys, k => k.Contains("lora_down", StringComparison.Ordinal));
    }

    [Fact]
    public void Sd15LokrSplitsEachWeightByLycorisFactorization()
    {
        // 320 = 16 · 20 and 768 = 24 · 32 (the divisor pairs nearest the square roots), 2560 = 40 · 64, 640 = 20 · 32.
        Assert.Equal((16L, 20L), LokrNetworkModule.Factorization(320));
        Assert.Equal((24L, 32L), LokrNetworkModule.Factorization(768));
        Assert.Equal((8L, 16L), LokrNetworkModule.Factorization(128));
        Assert.Equal((32L, 32L), LokrNetworkModule.Factorization(1024));
        Assert.Equal((1L, 127L), LokrNetworkModule.Factorization(127));
        Assert.Equal((4L, 32L), LokrNetworkModule.Factorization(128, 4));   // a factor that divides is taken as it is
        Assert.Equal((8L, 40L), LokrNetworkModule.Factorization(320, 8));

        var shapes = Shapes(new LoraNetworkOptions(NetworkDim: 4, NetworkAlpha: 2, ConvDim: 2) { Algorithm = LoraAlgorithm.Lokr });
        // w1 [a, c] whole; w2 [b, d] as w2_a [b, dim] · w2_b [dim, d] since dim 4 < max(b, d) / 2.
        Assert.Equal([16L, 16], shapes[Q + ".lokr_w1"]);
        Assert.Equal([20L, 4], shapes[Q + ".lokr_w2_a"]);
        Assert.Equal([4L, 20], shapes[Q + ".lokr_w2_b"]);
        Assert.Equal([16L, 24], shapes[K2 + ".lokr_w1"]);
        Assert.Equal([4L, 32], shapes[K2 + ".lokr_w2_b"]);
        Assert.Equal([40L, 16], shapes[Ff + ".lokr_w1"]);
        Assert.Equal([64L, 4], shapes[Ff + ".lokr_w2_a"]);
        Assert.Equal([20L, 16], shapes[Conv1 + ".lokr_w1"]);
        Assert.Equal([2L, 20 * 9], shapes[Conv1 + ".lokr_w2_b"]);     // the kernel rides with the second factor
        Assert.Empty(shapes[Q + ".alpha"]);

        // factor 8 splits 320 as 8 · 40 and 640 as 8 · 80; decompose_both makes w1 low-rank where dim 2 < max(8, 8) / 2,
        // but not at conv_dim 16.
        var factored = Shapes(new LoraNetworkOptions(NetworkDim: 2, ConvDim: 16) { Algorithm = LoraAlgorithm.Lokr, LokrFactor = 8, LokrDecomposeBoth = true });
        Assert.Equal([8L, 2], factored[Q + ".lokr_w1_a"]);
        Assert.Equal([2L, 8], factored[Q + ".lokr_w1_b"]);
        Assert.Equal([40L, 2], factored[Q + ".lokr_w2_a"]);
        Assert.False(factored.ContainsKey(Q + ".lokr_w1"));
        Assert.Equal([8L, 8], factored[Conv1 + ".lokr_w1"]);
        Assert.Equal([16L, 40 * 9], factored[Conv1 + ".lokr_w2_b"]);

        // A rank of at least half of w2's larger side makes w2 whole: [20, 20] for to_q at dim 10, and the 3×3 conv's
        // [32, 20, 3, 3] at conv_dim 16, kernel and all.
        var whole = Shapes(new LoraNetworkOptions(NetworkDim: 10, ConvDim: 16) { Algorithm = LoraAlgorithm.Lokr });
        Assert.Equal([20L, 20], whole[Q + ".lokr_w2"]);
        Assert.Equal([32L, 20, 3, 3], whole[Conv1 + ".lokr_w2"]);
        Assert.False(whole.ContainsKey(Q + ".lokr_w2_a"));
    }

    [Fact]
    public void UseTuckerGivesTheThreeByThreeConvolutionsTuckerCores()
    {
        // LoHa: each factor a core [dim, dim, 3, 3] with w_a [dim, out] and w_b [dim, in]; Linear and 1×1 layers keep the plain form.
        var loha = Shapes(new LoraNetworkOptions(NetworkDim: 4, ConvDim: 2) { Algorithm = LoraAlgorithm.Loha, UseTucker = true });
        Assert.Equal([2L, 2, 3, 3], loha[Conv1 + ".hada_t1"]);
        Assert.Equal([2L, 2, 3, 3], loha[Conv1 + ".hada_t2"]);
        Assert.Equal([2L, 640], loha[Conv1 + ".hada_w1_a"]);
        Assert.Equal([2L, 320], loha[Conv1 + ".hada_w2_b"]);
        Assert.Equal([320L, 4], loha[Q + ".hada_w1_a"]);
        Assert.False(loha.ContainsKey(ProjIn + ".hada_t1"));
        // LoKr: the low-rank w2 of conv1 (640 = 20 · 32, 320 = 16 · 20) as lokr_t2 [2, 2, 3, 3], w2_a [2, 32], w2_b [2, 20].
        var lokr = Shapes(new LoraNetworkOptions(NetworkDim: 4, ConvDim: 2) { Algorithm = LoraAlgorithm.Lokr, UseTucker = true });
        Assert.Equal([2L, 2, 3, 3], lokr[Conv1 + ".lokr_t2"]);
        Assert.Equal([2L, 32], lokr[Conv1 + ".lokr_w2_a"]);
        Assert.Equal([2L, 20], lokr[Conv1 + ".lokr_w2_b"]);
        Assert.Equal([20L, 16], lokr[Conv1 + ".lokr_w1"]);
        Assert.False(lokr.ContainsKey(Q + ".lokr_t2"));
    }

    [Fact]
    public void DoraAddsTheColumnNormsOfEachLayerAsDoraScale()
    {
        using var model = LoadTiny();
        using var network = LoraNetwork.Create(model, new LoraNetworkOptions(NetworkDim: 2, ConvDim: 2) { WeightDecompose = true });
        using var state = network.StateDict();
        var linear = network.UnetModules.First(m => m.Layer is Linear);
        var weight = ((Linear)linear.Layer).Weight;
        Assert.Equal([1L, weight.Shape[1]], state[linear.LoraName + ".dora_scale"].Shape);
        // Each value is the norm of that input column of the layer's weight, worked out here from its elements.
        var w = weight.ToArray<float>();
        var (rows, columns) = ((int)weight.Shape[0], (int)weight.Shape[1]);
        var scale = state[linear.LoraName + ".dora_scale"].ToArray<float>();
        for (var i = 0; i < columns; i++)
        {
            var norm = Math.Sqrt(Enumerable.Range(0, rows).Sum(o => (double)w[o * columns + i] * w[o * columns + i]));
            Assert.True(Math.Abs(norm - scale[i]) <= 1e-6 * norm, $"column {i}: {scale[i]} vs {norm}");
        }
        var conv = network.UnetModules.First(m => m.LoraName.EndsWith("_conv1", StringComparison.Ordinal));
        Assert.Equal([1L, ((Conv2d)conv.Layer).InChannels, 1, 1], state[conv.LoraName + ".dora_scale"].Shape);
        // At the start W · |W| / |W| is W: the model is unchanged (up to the rounding of that division).
        using var x = torch.Randn([2, columns], new Generator(1));
        using var noGrad = Autograd.NoGrad();
        using var adapted = ((Linear)linear.Layer).Forward(x);
        using var plain = Functional.Linear(x, weight, ((Linear)linear.Layer).Bias);
        Assert.True(adapted.Allclose(plain, rtol: 1e-5, atol: 1e-6));
    }

    public static TheoryData<string, double> Algorithms => new()
    {
        // The zero factor's spread: N(0, 1) moved the tiny model's image by 63 (LoRA+DoRA) to 103 (LoHa) levels when
        // measured, and the file applied by the generation path stayed within 1 level of the attached network.
        { "loha", 1.0 }, { "lokr", 1.0 }, { "lora+dora", 1.0 }, { "loha+dora", 1.0 }, { "lokr+dora", 1.0 }, { "loha+tucker", 1.0 }, { "lokr+tucker", 1.0 },
    };

    private static LoraNetworkOptions OptionsFor(string algorithm) => new(NetworkDim: 2, NetworkAlpha: 1, TrainTextEncoder: true, ConvDim: 2)
    {
        Algorithm = algorithm.Split('+')[0] switch { "loha" => LoraAlgorithm.Loha, "lokr" => LoraAlgorithm.Lokr, _ => LoraAlgorithm.Lora },
        WeightDecompose = algorithm.EndsWith("+dora", StringComparison.Ordinal),
        UseTucker = algorithm.EndsWith("+tucker", StringComparison.Ordinal),
    };

    [Theory]
    [MemberData(nameof(Algorithms))]
    public void TheSavedFileAppliedByTheGenerationPathMakesTheAttachedNetworksImage(string algorithm, double spread)
    {
        using var model = LoadTiny();
        var baseline = Generate(model);
        var options = OptionsFor(algorithm);
        var file = Path.Combine(folder, algorithm + ".safetensors");
        byte[] attached;
        using (var network = LoraNetwork.Create(model, options, new Generator(31)))
        {
            using (Autograd.NoGrad())
                foreach (var (m, i) in network.Loras.Select((m, i) => (m, i)))
                {
                    Randomise(m.ZeroInitialised, spread, (ulong)(400 + i));
                    // A learned magnitude away from the start: every column 20% longer.
                    m.DoraScale?.Mul_(1.2);
                }
            network.Eval();
            attached = Generate(model);
            KohyaLoraExport.Save(network, file, KohyaLoraExport.MinimumMetadata(model, options));
        }
        Assert.Equal(baseline, Generate(model));  // detached: the model is itself again

        using (var lora = LoraFile.Load(file))
            Assert.All(lora.Modules, m => Assert.Equal(options.Algorithm, m.Algorithm));
        var patched = Generate(model, loras: [(file, 1.0)]);
        var half = Generate(model, loras: [(file, 0.5)]);
        var moved = MaxPixelDifference(baseline, attached);
        Assert.True(moved > 20, $"the {algorithm} network should change the image (it moved it by {moved})");
        // The merge computes (W + s·Δ)·x where the network adds s·(Δ·x): float32 rounding only.
        Assert.InRange(MaxPixelDifference(attached, patched), 0, 1);
        Assert.True(MaxPixelDifference(baseline, half) > 0 && MaxPixelDifference(half, patched) > 0, "strength 0.5 should lie between the two");
        Assert.Equal(baseline, Generate(model));
    }

    [Theory]
    [InlineData("loha")]
    [InlineData("lokr+dora")]
    public void TheMergedDeltaScalesLinearlyWithTheStrength(string algorithm)
    {
        using var model = LoadTiny();
        var options = OptionsFor(algorithm);
        var file = Path.Combine(folder, "linear.safetensors");
        using (var network = LoraNetwork.Create(model, options, new Generator(32)))
        {
            using (Autograd.NoGrad())
                foreach (var (m, i) in network.Loras.Select((m, i) => (m, i)))
                {
                    Randomise(m.ZeroInitialised, 1.0, (ulong)(500 + i));
                    m.DoraScale?.Mul_(0.7);
                }
            KohyaLoraExport.Save(network, file, KohyaLoraExport.MinimumMetadata(model, options));
        }
        using var lora = LoraFile.Load(file);
        var targets = LoraModelNames.Targets(model);
        var layer = lora.Modules.First(m => m.Target == LoraTarget.Unet && m.Name.EndsWith("attn1_to_q", StringComparison.Ordinal)).Name;
        var weight = model.Unet.NamedModules().Where(p => p.Name.Replace('.', '_') == layer).Select(p => ((Linear)p.Module).Weight).Single();
        using var original = weight.Clone();
        Tensor DeltaAt(double strength)
        {
            using var patch = LoraPatch.Apply([new LoraApplication(lora, strength)], targets);
            return weight.Sub(original);
        }
        using var full = DeltaAt(1.0);
        using var half = DeltaAt(0.5);
        using var twice = half.Mul(2);
        Assert.True(full.Abs().Max().Item() > 1e-3, "the module should move its weight");
        // W + m·D: D is computed once in float32 and scaled, so the two differ by the rounding of W + m·D only.
        Assert.True(twice.Allclose(full, rtol: 1e-5, atol: 1e-6));
    }

    [Fact]
    public void TinySdxlLokrWithDoraFileMatchesEveryLayerThroughTheOriginalLayoutNames()
    {
        var sdxl = Path.Combine(folder, "sdxl");
        WriteTinySdxl(sdxl);
        using var model = Models.Loading.ModelLoader.Load(sdxl);
        var options = new LoraNetworkOptions(NetworkDim: 2, TrainTextEncoder: true, ConvDim: 1) { Algorithm = LoraAlgorithm.Lokr, WeightDecompose = true };
        var file = Path.Combine(folder, "xl-lokr.safetensors");
        var inputs = new Dictionary<NetworkModule, (Tensor X, Tensor Y)>();
        using (var network = LoraNetwork.Create(model, options, new Generator(9)))
        {
            Assert.Contains(network.UnetModules, m => m.LoraName.StartsWith("lora_unet_input_blocks_", StringComparison.Ordinal));
            Assert.Contains(network.TextEncoderModules, m => m.LoraName.StartsWith("lora_te2_", StringComparison.Ordinal));
            using (Autograd.NoGrad())
                foreach (var (m, i) in network.Loras.Select((m, i) => (m, i)))
                {
                    Randomise(m.ZeroInitialised, 0.3, (ulong)(600 + i));
                    m.DoraScale!.Mul_(1.1);
                }
            network.Eval();
            KohyaLoraExport.Save(network, file, KohyaLoraExport.MinimumMetadata(model, options));
            using var noGrad = Autograd.NoGrad();
            foreach (var m in network.Loras.Where(m => m.Layer is Linear))
            {
                var x = torch.Randn([3, ((Linear)m.Layer).InFeatures], new Generator(7));
                inputs[m] = (x, ((Linear)m.Layer).Forward(x));
            }
        }
        using var lora = LoraFile.Load(file);
        using (var patch = LoraPatch.Apply([new LoraApplication(lora, 1.0)], LoraModelNames.Targets(model), LoraModelNames.AlternateNames(model.Unet)))
        {
            // Every module finds its layer by its kohya name, and the merged layer computes what the attached module did.
            Assert.Empty(patch.Unmatched);
            Assert.Equal(lora.Modules.Count, patch.PatchedCount);
            using var noGrad = Autograd.NoGrad();
            foreach (var (m, (x, y)) in inputs)
            {
                using var merged = ((Linear)m.Layer).Forward(x);
                Assert.True(merged.Allclose(y, rtol: 1e-4, atol: 1e-5), m.LoraName);
            }
        }
        foreach (var (x, y) in inputs.Values)
        {
            x.Dispose();
            y.Dispose();
        }
    }

    [Fact]
    public void LycorisMetadataNamesItsModuleAndAlgorithm()
    {
        var loha = KohyaLoraExport.MinimumMetadata(Formats.Checkpoints.ModelFamily.V1, false,
            new LoraNetworkOptions(NetworkDim: 8, NetworkAlpha: 4, ConvDim: 4) { Algorithm = LoraAlgorithm.Loha, ExtraArgs = new Dictionary<string, string> { ["algo"] = "loha" } });
        Assert.Equal("lycoris.kohya", loha["ss_network_module"]);
        Assert.Equal("{\"conv_dim\": \"4\", \"conv_alpha\": \"1\", \"algo\": \"loha\"}", loha["ss_network_args"]);
        var dora = KohyaLoraExport.MinimumMetadata(Formats.Checkpoints.ModelFamily.V1, false, new LoraNetworkOptions { WeightDecompose = true });
        Assert.Equal("lycoris.kohya", dora["ss_network_module"]);

        // From a run's settings: the algorithm, LyCORIS's factor and dora_wd as network_args.
        var options = Methods.LoraMethod.NetworkOptions(new TrainingConfig { NetworkAlgo = "lokr", LokrFactor = 8, DoraWd = true }, isSdxl: false);
        Assert.Equal((LoraAlgorithm.Lokr, 8, true), (options.Algorithm, options.LokrFactor, options.WeightDecompose));
        Assert.Equal(new Dictionary<string, string> { ["algo"] = "lokr", ["factor"] = "8", ["dora_wd"] = "True" }, options.ExtraArgs);
    }

    [Fact]
    public void NetworkSettingsAreRefusedNamingTheFieldAndTheFix()
    {
        string Refusal(TrainingConfig c) => Assert.Throws<TrainingConfigException>(() => (c with { Output = "out", Data = "data" }).Validate()).Message;
        Assert.StartsWith("network_algo: 'lycoris' is not one of lora, loha, lokr", Refusal(new TrainingConfig { NetworkAlgo = "lycoris" }));
        Assert.StartsWith("network_dropout:", Refusal(new TrainingConfig { NetworkAlgo = "loha", NetworkDropout = 0.1 }));
        Assert.StartsWith("lokr_factor:", Refusal(new TrainingConfig { NetworkAlgo = "lokr", LokrFactor = 0 }));
        Assert.StartsWith("lokr_factor:", Refusal(new TrainingConfig { NetworkAlgo = "loha", LokrFactor = 4 }));
        Assert.StartsWith("lokr_decompose_both:", Refusal(new TrainingConfig { LokrDecomposeBoth = true }));
        Assert.StartsWith("use_tucker:", Refusal(new TrainingConfig { UseTucker = true }));
        Assert.StartsWith("loraplus_lr_ratio:", Refusal(new TrainingConfig { NetworkAlgo = "loha", LoraplusLrRatio = 16 }));
        Assert.StartsWith("loraplus_lr_ratio:", Refusal(new TrainingConfig { LoraplusLrRatio = -1 }));
        Assert.StartsWith("loraplus_unet_lr_ratio:", Refusal(new TrainingConfig { Optimizer = "Prodigy", LearningRate = 1, LoraplusUnetLrRatio = 16 }));
        Assert.StartsWith("down_lr_weight:", Refusal(new TrainingConfig { DownLrWeight = "wavy" }));
        Assert.StartsWith("mid_lr_weight: item 1, 'x'", Refusal(new TrainingConfig { MidLrWeight = "x" }));
        Assert.StartsWith("block_dims: 24 values given", Refusal(new TrainingConfig { BlockDims = string.Join(",", Enumerable.Repeat(4, 24)) }));
        Assert.StartsWith("block_dims: ranks are whole numbers", Refusal(new TrainingConfig { BlockDims = string.Join(",", Enumerable.Repeat(1.5, 25)) }));
        // SDXL's 23 blocks pass the check before the model is known, and are refused for an SD 1.x model when it is.
        new TrainingConfig { Output = "out", Data = "data", BlockDims = string.Join(",", Enumerable.Repeat(4, 23)) }.Validate();
        Assert.StartsWith("conv_block_dims: it applies with block_dims", Refusal(new TrainingConfig { ConvBlockDims = string.Join(",", Enumerable.Repeat(4, 25)) }));
        var error = Assert.Throws<TrainingConfigException>(() => Methods.LoraMethod.NetworkOptions(
            new TrainingConfig { BlockDims = string.Join(",", Enumerable.Repeat(4, 23)) }, isSdxl: false));
        Assert.Equal("block_dims: 23 values given; an SD 1.x/2.x UNet has 25 blocks (IN00-IN11, MID, OUT00-OUT11), so give one number for each", error.Message);
    }
}
