using SdAppliance.Formats.Hashing;
using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Formats;
using SdAppliance.Formats.Adapters;
using SdAppliance.Models.Adapters;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using SdAppliance.Training.Exports;
using SdAppliance.Training.Networks;
using static SdAppliance.Training.Tests.LoraTestSupport;

namespace SdAppliance.Training.Tests;

/// <summary>
/// kohya's LoRANetwork: which layers it wraps and what it calls them on the real SD 1.5 and SDXL
/// architectures (built on the meta device), its initialisation and forward, and on the tiny model
/// that a saved file applied by the generation path (or merged) makes the image the attached network makes.
/// </summary>
[Collection(TinySdxlCollection.Name)]
public sealed class LoraNetworkTests : IDisposable
{
    private readonly string folder = Directory.CreateTempSubdirectory("sdapp-lora-").FullName;

    public void Dispose() => Directory.Delete(folder, recursive: true);

    [Fact]
    public void Sd15HasKohyasModuleCountsAndNames()
    {
        var (unet, te, _) = MetaModel("sd15");
        using var unetOwner = unet;
        using var teOwner = te;
        using (var network = LoraNetwork.Create(unet, te, null, new LoraNetworkOptions(NetworkDim: 4, TrainTextEncoder: true)))
        {
            // FORMATS §4.1: 16 Transformer2DModels × 12 layers, and 12 CLIP layers × 6.
            Assert.Equal(192, network.UnetModules.Count);
            Assert.Equal(72, network.TextEncoderModules.Count);
            var names = network.Loras.Select(m => m.LoraName).ToHashSet();
            Assert.Contains("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", names);
            Assert.Contains("lora_unet_up_blocks_2_attentions_2_transformer_blocks_0_attn1_to_k", names);
            Assert.Contains("lora_te_text_model_encoder_layers_0_self_attn_q_proj", names);
            Assert.Contains("lora_te_text_model_encoder_layers_11_mlp_fc2", names);
            Assert.Contains("lora_unet_mid_block_attentions_0_proj_in", names);
            Assert.Contains("lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_0_proj", names);
            Assert.Contains("lora_unet_down_blocks_2_attentions_1_transformer_blocks_0_attn2_to_out_0", names);

            // Text-encoder modules come first in the state dict, as kohya registers them; three tensors each.
            using var state = network.StateDict();
            Assert.Equal(3 * (192 + 72), state.Count);
            Assert.StartsWith("lora_te_", state.Keys.First(), StringComparison.Ordinal);
            // SD 1.x's proj_in is a 1×1 convolution: the LoRA is a 1×1 down conv and a 1×1 up conv.
            Assert.Equal([4L, 320, 1, 1], state["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"].Shape);
            Assert.Equal([320L, 4, 1, 1], state["lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight"].Shape);
            // attn2's keys read the 768-wide text context; GEGLU's projection is 2 × 4 × 320 wide.
            Assert.Equal([4L, 768], state["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight"].Shape);
            Assert.Equal([2560L, 4], state["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_0_proj.lora_up.weight"].Shape);
            Assert.Empty(state["lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha"].Shape);
            Assert.All(network.Loras, m => Assert.Same(m, LoraNetwork.WrapperOf(m.Layer)));
        }
        // Disposing the network took its adapters off the model.
        Assert.All(unet.Modules().OfType<Linear>(), l => Assert.Null(l.Wrapper));
    }

    [Fact]
    public void Sd15LoConAddsTheResnetAndSamplerConvolutions()
    {
        var (unet, te, _) = MetaModel("sd15");
        using (unet)
        using (te)
        using (var network = LoraNetwork.Create(unet, te, null, new LoraNetworkOptions(NetworkDim: 8, NetworkAlpha: 4, ConvDim: 2)))
        {
            // 22 resnets × (conv1, conv2, time_emb_proj) + 14 conv_shortcuts + 3 downsamplers + 3 upsamplers
            // = 86 on top of the 192 (kohya logs "create LoRA for U-Net: 278 modules" for LoCon on SD 1.5).
            Assert.Equal(278, network.UnetModules.Count);
            Assert.Empty(network.TextEncoderModules);
            var conv1 = (LoraNetworkModule)network.UnetModules.Single(m => m.LoraName == "lora_unet_down_blocks_1_resnets_0_conv1");
            Assert.Equal((2L, 1.0 / 2), (conv1.Rank, conv1.Scale));  // conv_dim 2, kohya's default conv_alpha 1
            Assert.Equal([2L, 320, 3, 3], conv1.DownWeight.Shape);
            var shortcut = network.UnetModules.Single(m => m.LoraName == "lora_unet_down_blocks_1_resnets_0_conv_shortcut");
            Assert.Equal((8L, 0.5), (shortcut.Rank, shortcut.Scale));  // 1×1: network_dim 8, alpha 4
            var down = (LoraNetworkModule)network.UnetModules.Single(m => m.LoraName == "lora_unet_down_blocks_0_downsamplers_0_conv");
            Assert.Equal([2L, 320, 3, 3], down.DownWeight.Shape);
            Assert.Contains(network.UnetModules, m => m.LoraName == "lora_unet_up_blocks_0_upsamplers_0_conv");
            Assert.Contains(network.UnetModules, m => m.LoraName == "lora_unet_mid_block_resnets_1_time_emb_proj");
        }
    }

    [Fact]
    public void SdxlUsesOriginalLayoutUnetNamesAndTwoTextEncoderPrefixes()
    {
        var (unet, te, te2) = MetaModel("sdxl_base");
        using (unet)
        using (te)
        using (te2)
        using (var network = LoraNetwork.Create(unet, te, te2, new LoraNetworkOptions(NetworkDim: 1, TrainTextEncoder: true)))
        {
            // FORMATS §4.1: 70 transformer blocks × 10 + 11 × (proj_in, proj_out); TE1 72 + TE2 192.
            Assert.Equal(722, network.UnetModules.Count);
            Assert.Equal(264, network.TextEncoderModules.Count);
            var names = network.Loras.Select(m => m.LoraName).ToHashSet();
            Assert.Contains("lora_unet_output_blocks_2_1_transformer_blocks_6_ff_net_0_proj", names);
            Assert.Contains("lora_te1_text_model_encoder_layers_0_mlp_fc1", names);
            Assert.Contains("lora_te2_text_model_encoder_layers_31_self_attn_out_proj", names);
            Assert.Equal(72, names.Count(n => n.StartsWith("lora_te1_", StringComparison.Ordinal)));

            // Every UNet name is an original-layout module of the released checkpoint (fixture key list).
            var ldm = Architecture("sdxl_base").GetProperty("ldm").EnumerateObject().Select(p => p.Name)
                .Where(k => k.StartsWith("model.diffusion_model.", StringComparison.Ordinal) && k.EndsWith(".weight", StringComparison.Ordinal))
                .Select(k => "lora_unet_" + k["model.diffusion_model.".Length..^".weight".Length].Replace('.', '_')).ToHashSet();
            Assert.All(network.UnetModules, m => Assert.Contains(m.LoraName, ldm));
        }
    }

    [Fact]
    public void SdxlLoConNamesAreOriginalLayoutToo()
    {
        var (unet, te, te2) = MetaModel("sdxl_base");
        using (unet)
        using (te)
        using (te2)
        using (var network = LoraNetwork.Create(unet, te, te2, new LoraNetworkOptions(NetworkDim: 1, ConvDim: 1)))
        {
            var names = network.UnetModules.Select(m => m.LoraName).ToHashSet();
            // down_blocks.0.resnets.0.conv1 → input_blocks.1.0.in_layers.2; the first downsampler → input_blocks.3.0.op;
            // up_blocks.0's upsampler sits after its attention → output_blocks.2.2.conv.
            Assert.Contains("lora_unet_input_blocks_1_0_in_layers_2", names);
            Assert.Contains("lora_unet_input_blocks_3_0_op", names);
            Assert.Contains("lora_unet_output_blocks_2_2_conv", names);
            Assert.Contains("lora_unet_middle_block_0_emb_layers_1", names);
            Assert.Contains("lora_unet_output_blocks_0_0_skip_connection", names);
        }
    }

    [Fact]
    public void StartsAsTheModelItselfAndAddsTheScaledLowRankBranch()
    {
        using var model = LoadTiny();
        using var generator = new Generator(3);
        using var network = LoraNetwork.Create(model, new LoraNetworkOptions(NetworkDim: 2, NetworkAlpha: 1), generator);
        var module = (LoraNetworkModule)network.UnetModules.First(m => m.Layer is Linear);
        var layer = (Linear)module.Layer;
        // kohya's init: up zeros, down kaiming_uniform(a=√5), i.e. U(±1/√in).
        Assert.Equal(0, module.UpWeight.Abs().Max().Item());
        var bound = 1 / Math.Sqrt(layer.InFeatures);
        Assert.InRange(module.DownWeight.Abs().Max().Item(), bound / 2, bound);
        Assert.Equal(0.5, module.Scale);
        Assert.Equal(0.5, module.Alpha.Item() / module.Rank);

        using var x = torch.Randn([2, 5, layer.InFeatures], generator);
        using var noGrad = Autograd.NoGrad();
        using (var adapted = layer.Forward(x))
        using (var plain = Functional.Linear(x, layer.Weight, layer.Bias))
            Assert.Equal(plain.ToArray<float>(), adapted.ToArray<float>());  // zero up: bit-identical

        Randomise(module.UpWeight, 0.5, 4);
        network.Multiplier = 0.8;
        using var expected = Functional.Linear(x, layer.Weight, layer.Bias)
            + Functional.Linear(Functional.Linear(x, module.DownWeight), module.UpWeight) * (0.8 * 0.5);
        using var actual = layer.Forward(x);
        // Same float32 ops in another association: a few ulps of values of order 1.
        Assert.True(actual.Allclose(expected, rtol: 1e-5, atol: 1e-6));
        network.Detach();
        using var detached = layer.Forward(x);
        using var plainAgain = Functional.Linear(x, layer.Weight, layer.Bias);
        Assert.Equal(plainAgain.ToArray<float>(), detached.ToArray<float>());
    }

    /// <summary>
    /// A Linear's branch runs as one addmm (the layer's output plus the scaled low-rank product); its gradients must be
    /// those of kohya's composition, layer(x) + up(down(x)) · multiplier · scale, for token inputs and plain rows.
    /// </summary>
    [Theory]
    [InlineData(new long[] { 2, 5 })]
    [InlineData(new long[] { 3 })]
    public void GradientsOfALinearBranchAreThoseOfTheComposedFormula(long[] leading)
    {
        using var model = LoadTiny();
        using var generator = new Generator(7);
        using var network = LoraNetwork.Create(model, new LoraNetworkOptions(NetworkDim: 4, NetworkAlpha: 2), generator);
        var module = (LoraNetworkModule)network.UnetModules.First(m => m.Layer is Linear);
        var layer = (Linear)module.Layer;
        Randomise(module.UpWeight, 0.5, 8);
        network.Multiplier = 0.7;
        using var x = torch.Randn([.. leading, layer.InFeatures], generator);
        using var weights = torch.Randn([.. leading, layer.OutFeatures], generator);
        using (var output = layer.Forward(x))
        using (var loss = (output * weights).Sum())
            loss.Backward();

        using var down = module.DownWeight.Detach().Clone().RequiresGrad_();
        using var up = module.UpWeight.Detach().Clone().RequiresGrad_();
        using (var composed = Functional.Linear(x, layer.Weight, layer.Bias) + Functional.Linear(Functional.Linear(x, down), up) * (0.7 * 0.5))
        using (var loss = (composed * weights).Sum())
            loss.Backward();
        // Sums over at most 10 rows of products of order 1 in float32, associated differently: a few ulps of values of
        // order 1-10.
        Assert.True(module.DownWeight.Grad!.Allclose(down.Grad!, rtol: 1e-5, atol: 1e-5));
        Assert.True(module.UpWeight.Grad!.Allclose(up.Grad!, rtol: 1e-5, atol: 1e-5));
        Assert.True(up.Grad!.Abs().Max().Item() > 0.1);  // the check compares gradients, not zeros
    }

    [Fact]
    public void DropoutActsOnTheLowRankBranchOnlyInTrainingMode()
    {
        using var model = LoadTiny();
        using var network = LoraNetwork.Create(model, new LoraNetworkOptions(NetworkDim: 4, NetworkAlpha: 4, Dropout: 0.5));
        var module = (LoraNetworkModule)network.UnetModules.First(m => m.Layer is Linear);
        var layer = (Linear)module.Layer;
        Randomise(module.UpWeight, 1, 5);
        using var noGrad = Autograd.NoGrad();
        using var x = torch.Ones([1, 64, layer.InFeatures]);
        network.Eval();
        using var eval1 = layer.Forward(x);
        using var eval2 = layer.Forward(x);
        Assert.Equal(eval1.ToArray<float>(), eval2.ToArray<float>());
        network.Train();
        using var train = layer.Forward(x);
        Assert.False(train.Allclose(eval1));
    }

    [Fact]
    public void OptionsAreValidatedNamingTheField()
    {
        using var model = LoadTiny();
        Assert.Contains("NetworkDim", Assert.Throws<ArgumentOutOfRangeException>(() => LoraNetwork.Create(model, new LoraNetworkOptions(NetworkDim: 0))).Message);
        Assert.Contains("Dropout", Assert.Throws<ArgumentOutOfRangeException>(() => LoraNetwork.Create(model, new LoraNetworkOptions(Dropout: 1))).Message);
        Assert.Contains("ConvAlpha", Assert.Throws<ArgumentException>(() => LoraNetwork.Create(model, new LoraNetworkOptions(ConvAlpha: 1))).Message);
        Assert.Throws<ArgumentException>(() => LoraNetwork.Create(model, new LoraNetworkOptions(TrainUnet: false)));
        // A second network cannot take a layer the first one holds.
        using var first = LoraNetwork.Create(model, new LoraNetworkOptions(NetworkDim: 1));
        Assert.Throws<InvalidOperationException>(() => LoraNetwork.Create(model, new LoraNetworkOptions(NetworkDim: 1)));
        Assert.All(first.Loras, m => Assert.Same(m, LoraNetwork.WrapperOf(m.Layer)));
    }

    [Fact]
    public void SavedFileIsKohyasLayoutWithHashesAndLoadsBack()
    {
        using var model = LoadTiny();
        var options = new LoraNetworkOptions(NetworkDim: 2, NetworkAlpha: 1, TrainTextEncoder: true, ConvDim: 2, ConvAlpha: 2);
        using var network = LoraNetwork.Create(model, options, new Generator(8));
        foreach (var (m, i) in network.Loras.Select((m, i) => (m, i))) Randomise(m.ZeroInitialised, 0.1, (ulong)(100 + i));
        var metadata = KohyaLoraExport.MinimumMetadata(model, options);
        metadata["ss_output_name"] = "tiny";
        var file = Path.Combine(folder, "tiny.safetensors");
        KohyaLoraExport.Save(network, file, metadata, DType.Float16);

        using var st = SafetensorsFile.Open(file);
        using var state = network.StateDict();
        Assert.Equal(state.Keys.Order(StringComparer.Ordinal), st.Names.Order(StringComparer.Ordinal));
        Assert.All(st.Tensors, t => Assert.Equal(SafetensorsDType.F16, t.DType));
        Assert.Equal("networks.lora", st.Metadata["ss_network_module"]);
        Assert.Equal("{\"conv_dim\": \"2\", \"conv_alpha\": \"2\"}", st.Metadata["ss_network_args"]);
        Assert.Equal("tiny", st.Metadata["ss_output_name"]);
        // The payload does not depend on the header, so the model hash is the final file's own addnet hash;
        // the file is under 1 MiB, so the legacy hash is that of no bytes (sha256("") = e3b0c442…).
        using (var stream = File.OpenRead(file))
            Assert.Equal(FileHashes.AddNetSha256(stream, "lora"), st.Metadata["sshs_model_hash"]);
        Assert.Equal("e3b0c442", st.Metadata["sshs_legacy_hash"]);
        Assert.Empty(Directory.GetFiles(folder, ".*"));

        // The generation path reads every module, with its alpha.
        using (var lora = LoraFile.Load(file))
        {
            Assert.Equal(network.Loras.Count, lora.Modules.Count);
            var conv = lora.Modules.Single(m => m.Name == "down_blocks_0_resnets_0_conv1");
            Assert.Equal(1.0, conv.Scale);  // conv_alpha 2 / conv_dim 2
            Assert.Equal(0.5, lora.Modules.Single(m => m.Name == "text_model_encoder_layers_0_self_attn_q_proj").Scale);
        }

        // Resume: a fresh network takes the saved values (float16-rounded) back.
        using var second = LoadTiny();
        using var again = LoraNetwork.Create(second, options);
        again.Load(file);
        var source = network.Loras[5].ZeroInitialised;
        using var rounded = source.To(DType.Float16).To(DType.Float32);
        Assert.Equal(rounded.ToArray<float>(), again.Loras[5].ZeroInitialised.ToArray<float>());
        // A file of another layout is refused, naming a key.
        using var third = LoadTiny();
        using var other = LoraNetwork.Create(third, new LoraNetworkOptions(NetworkDim: 2));
        Assert.Contains("Unexpected key", Assert.Throws<UserInputException>(() => other.Load(file)).Message);
    }

    [Fact]
    public void FileAppliedByTheGenerationPathOrMergedMakesTheImageOfTheAttachedNetwork()
    {
        using var model = LoadTiny();
        var baseline = Generate(model);
        var options = new LoraNetworkOptions(NetworkDim: 4, NetworkAlpha: 2, TrainTextEncoder: true, ConvDim: 2);
        byte[] attached;
        var file = Path.Combine(folder, "shapes.safetensors");
        using (var network = LoraNetwork.Create(model, options, new Generator(21)))
        {
            // Up weights of N(0, 1) move the image by up to ~80 levels; at that strength a 2% error in the
            // LoRA's scale moves pixels by 4, so the ±1 below would catch it.
            foreach (var (m, i) in network.Loras.Select((m, i) => (m, i))) Randomise(m.ZeroInitialised, 1.0, (ulong)(200 + i));
            network.Eval();
            attached = Generate(model);
            KohyaLoraExport.Save(network, file, KohyaLoraExport.MinimumMetadata(model, options));
        }
        // The network changed the image, and detaching (dispose) gave the model back.
        Assert.True(MaxPixelDifference(baseline, attached) > 40, "the LoRA should change the image");
        Assert.Equal(baseline, Generate(model));

        // Merged weights compute W·x + s·up·(down·x) as (W + s·up·down)·x: float32 rounding only, which
        // the README's ±1 per pixel covers.
        var patched = Generate(model, loras: [(file, 1.0)]);
        Assert.InRange(MaxPixelDifference(attached, patched), 0, 1);
        Assert.Equal(baseline, Generate(model));

        // Merging for good is the patch's own arithmetic: the same image, bit for bit.
        using var merged = LoadTiny();
        var result = ModelExport.MergeLora(merged, file, 1.0);
        using (var lora = LoraFile.Load(file))
            Assert.Equal(lora.Modules.Count, result.MergedModules);
        Assert.Empty(result.Unmatched);
        Assert.Equal(patched, Generate(merged));
    }

    // Up weights of std 1 saturate the tiny random SDXL (the image moves by 240 levels), and there the float
    // summation order alone (2 threads against 1) moved pixels by 45 between the attached network and the file
    // applied by the generation path; 0.3 still moves the image by about 150 levels and keeps the two within 1.
    private const double SdxlUpScale = 0.3;

    [Fact]
    public void TinySdxlFileMatchesEveryLayerThroughTheOriginalLayoutNames()
    {
        var sdxl = Path.Combine(folder, "sdxl");
        WriteTinySdxl(sdxl);
        using var model = Models.Loading.ModelLoader.Load(sdxl);
        var options = new LoraNetworkOptions(NetworkDim: 2, TrainTextEncoder: true, ConvDim: 1);
        var file = Path.Combine(folder, "xl.safetensors");
        var inputs = new Dictionary<NetworkModule, (Tensor X, Tensor Y)>();
        var baseline = Generate(model);
        byte[] attached;
        using (var network = LoraNetwork.Create(model, options, new Generator(9)))
        {
            Assert.Contains(network.UnetModules, m => m.LoraName.StartsWith("lora_unet_input_blocks_", StringComparison.Ordinal));
            Assert.Contains(network.TextEncoderModules, m => m.LoraName.StartsWith("lora_te2_", StringComparison.Ordinal));
            foreach (var (m, i) in network.Loras.Select((m, i) => (m, i))) Randomise(m.ZeroInitialised, SdxlUpScale, (ulong)(300 + i));
            network.Eval();
            attached = Generate(model);
            KohyaLoraExport.Save(network, file, KohyaLoraExport.MinimumMetadata(model, options));
            using var noGrad = Autograd.NoGrad();
            foreach (var m in network.Loras.Where(m => m.Layer is Linear))
            {
                var x = torch.Randn([3, ((Linear)m.Layer).InFeatures]);
                inputs[m] = (x, ((Linear)m.Layer).Forward(x));
            }
        }
        // The generation path finds every module by its kohya name: the file makes the attached network's image.
        Assert.True(MaxPixelDifference(baseline, attached) > 10, "the LoRA should change the image");
        Assert.InRange(MaxPixelDifference(attached, Generate(model, loras: [(file, 1.0)])), 0, 1);

        using var lora = LoraFile.Load(file);
        Assert.Equal(KohyaLoraExport.SdxlBaseVersion, lora.Metadata["ss_base_model_version"]);
        var targets = new Dictionary<LoraTarget, Module>
        {
            [LoraTarget.Unet] = model.Unet, [LoraTarget.TextEncoder] = model.TextEncoder, [LoraTarget.TextEncoder2] = model.TextEncoder2!,
        };
        using (var patch = LoraPatch.Apply([new LoraApplication(lora, 1.0)], targets, LoraModelNames.AlternateNames(model.Unet)))
        {
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
    public void MergeRefusesAFileForAnotherModel()
    {
        using var model = LoadTiny();
        var file = Path.Combine(folder, "alien.safetensors");
        SafetensorsFile.Write(file,
        [
            new SafetensorsTensor("lora_unet_nothing_here.lora_down.weight", SafetensorsDType.F32, [1, 2], new byte[8]),
            new SafetensorsTensor("lora_unet_nothing_here.lora_up.weight", SafetensorsDType.F32, [2, 1], new byte[8]),
        ]);
        using var state = model.Unet.StateDict();
        var before = state["conv_in.weight"].ToArray<float>();
        Assert.Throws<UserInputException>(() => ModelExport.MergeLora(model, file, 1));
        Assert.Equal(before, state["conv_in.weight"].ToArray<float>());
    }
}
