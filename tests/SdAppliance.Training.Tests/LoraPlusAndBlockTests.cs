using SdAppliance.Torch;
using SdAppliance.Torch.Optim;
using SdAppliance.Training.Methods;
using SdAppliance.Training.Networks;
using static SdAppliance.Training.Tests.LoraTestSupport;

namespace SdAppliance.Training.Tests;

/// <summary>
/// LoRA+ (kohya's loraplus_*_lr_ratio: lora_up in a group of its own at ratio × the rate) and kohya's block-wise LoRA
/// (down/mid/up_lr_weight, block_dims, block_alphas): the optimizer groups a run builds and the ranks of its modules.
/// Blocks are numbered here by hand from the names, as kohya's docs list them (IN00–IN11, MID, OUT00–OUT11).
/// </summary>
public sealed class LoraPlusAndBlockTests
{
    private static void AssertSameTensors(IEnumerable<Tensor> expected, IReadOnlyList<Tensor> actual)
    {
        var want = expected.ToList();
        Assert.Equal(want.Count, actual.Count);
        Assert.All(want, t => Assert.Contains(actual, a => ReferenceEquals(a, t)));
    }

    [Fact]
    public void LoraPlusPutsTheUpWeightsInTheirOwnGroupAtRatioTimesTheRate()
    {
        using var model = LoadTiny();
        var config = new TrainingConfig
        {
            NetworkDim = 2, LearningRate = 1e-4, TrainTextEncoder = true, TextEncoderLr = 5e-5, LoraplusLrRatio = 16, LoraplusTextEncoderLrRatio = 4,
        };
        using var method = new LoraMethod(model, config, new Generator(1));
        TrainingMethod asMethod = method;
        var groups = asMethod.ParameterGroups;
        var te = method.Network.TextEncoderModules.Cast<LoraNetworkModule>().ToList();
        var unet = method.Network.UnetModules.Cast<LoraNetworkModule>().ToList();
        // kohya's order: the text encoder's groups, then the UNet's; each "lora" group then its "plus" group.
        Assert.Equal(4, groups.Count);
        AssertSameTensors(te.Select(m => m.DownWeight), groups[0].Parameters);
        AssertSameTensors(te.Select(m => m.UpWeight), groups[1].Parameters);
        AssertSameTensors(unet.Select(m => m.DownWeight), groups[2].Parameters);
        AssertSameTensors(unet.Select(m => m.UpWeight), groups[3].Parameters);
        // The text encoder's own ratio (4) beats the general one; the UNet has none of its own, so takes 16.
        Assert.Equal(new[] { 5e-5, 2e-4, 1e-4, 1.6e-3 }, groups.Select(g => g.LearningRate), (a, b) => Math.Abs(a - b) <= 1e-15);
        using var optimizer = OptimizerFactory.Create(OptimizerKind.AdamW, config, groups);
        Assert.Equal(new[] { 5e-5, 2e-4, 1e-4, 1.6e-3 }, optimizer.ParamGroups.Select(g => g.Lr), (a, b) => Math.Abs(a - b) <= 1e-15);

        // Without LoRA+, one group per part as before.
        using var plain = new LoraMethod(LoadTiny(), config with { LoraplusLrRatio = null, LoraplusTextEncoderLrRatio = null }, new Generator(1));
        Assert.Equal(2, ((TrainingMethod)plain).ParameterGroups.Count);
    }

    [Fact]
    public void BlockIndexFollowsKohyasNumberingOfTheOriginalLayout()
    {
        // SD 1.x: down_blocks_i's resnets/attentions j are IN(1 + 3i + j), its downsampler IN(3i + 3); up_blocks from OUT00 = 13.
        Assert.Equal(1, LoraBlocks.Index("lora_unet_down_blocks_0_attentions_0_proj_in", false));
        Assert.Equal(3, LoraBlocks.Index("lora_unet_down_blocks_0_downsamplers_0_conv", false));
        Assert.Equal(8, LoraBlocks.Index("lora_unet_down_blocks_2_attentions_1_proj_out", false));
        Assert.Equal(11, LoraBlocks.Index("lora_unet_down_blocks_3_resnets_1_conv2", false));
        Assert.Equal(12, LoraBlocks.Index("lora_unet_mid_block_attentions_0_proj_in", false));
        Assert.Equal(15, LoraBlocks.Index("lora_unet_up_blocks_0_upsamplers_0_conv", false));
        Assert.Equal(24, LoraBlocks.Index("lora_unet_up_blocks_3_attentions_2_proj_out", false));
        Assert.Equal(-1, LoraBlocks.Index("lora_te_text_model_encoder_layers_0_mlp_fc1", false));
        // SDXL: input_blocks_N is 1 + N, middle_block_N 10 + N, output_blocks_N 13 + N.
        Assert.Equal(5, LoraBlocks.Index("lora_unet_input_blocks_4_1_proj_in", true));
        Assert.Equal(11, LoraBlocks.Index("lora_unet_middle_block_1_transformer_blocks_0_attn1_to_q", true));
        Assert.Equal(15, LoraBlocks.Index("lora_unet_output_blocks_2_1_proj_out", true));
        Assert.Equal(-1, LoraBlocks.Index("lora_te1_text_model_encoder_layers_0_mlp_fc1", true));
    }

    [Fact]
    public void LrWeightPresetsAndListsFillTheBlocksAsKohyaDoes()
    {
        var weights = LoraBlocks.LrWeights(false, "sine", null, "cosine+0.5", 0)!;
        Assert.Equal(25, weights.Length);
        for (var i = 0; i < 12; i++)
        {
            // sine rises from 0 at IN00 to 1 at IN11; cosine falls from 1 at OUT00 to 0 at OUT11, here lifted by 0.5.
            Assert.Equal(Math.Sin(Math.PI / 2 * i / 11), weights[i], 12);
            Assert.Equal(Math.Sin(Math.PI / 2 * (11 - i) / 11) + 0.5, weights[13 + i], 12);
        }
        Assert.Equal(1.0, weights[12]);  // mid left out: 1
        // A short list is filled with 1; weights at or under the threshold become 0; an empty item is 0.
        double[] filled = [0, 0.2, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0.5, .. Enumerable.Repeat(1.0, 12)];
        Assert.Equal(filled, LoraBlocks.LrWeights(false, "0.05,0.2,", "0.5", null, 0.1)!);
        // SDXL: 9 + 3 + 9 weights, with 1 for the embedding block before them and the output block after.
        var xl = LoraBlocks.LrWeights(true, null, "0,0.5,1", null, 0)!;
        double[] sdxl = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0.5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1];
        Assert.Equal(sdxl, xl);
        Assert.Null(LoraBlocks.LrWeights(false, null, null, null, 0));
    }

    // The tiny model's UNet modules by block: down_blocks_0 (resnets and attentions 0, 1 → IN01, IN02; its downsampler
    // IN03), down_blocks_1 (resnets only → IN04, IN05), the mid block, up_blocks_0 (resnets → OUT00-OUT02), up_blocks_1
    // (resnets and attentions → OUT03-OUT05). A block's resnet and its attention share the block.
    private static double ExpectedLrWeight(string name)
    {
        bool In(string block, int index) =>
            name.StartsWith($"lora_unet_{block}_resnets_{index}_", StringComparison.Ordinal) || name.StartsWith($"lora_unet_{block}_attentions_{index}_", StringComparison.Ordinal);
        if (In("down_blocks_0", 0)) return 0.5;           // IN01
        if (In("down_blocks_0", 1)) return 0;             // IN02
        if (In("down_blocks_1", 1)) return 2;             // IN05
        if (name.StartsWith("lora_unet_mid_block_", StringComparison.Ordinal)) return 0.25;
        if (In("up_blocks_1", 0)) return 0.75;            // OUT03
        return 1;
    }

    [Fact]
    public void BlockLrWeightsGiveEachModuleItsBlocksRateAndAZeroBlockNoModules()
    {
        using var model = LoadTiny();
        var config = new TrainingConfig
        {
            NetworkDim = 2, ConvDim = 2, LearningRate = 1e-4,
            DownLrWeight = "1,0.5,0,1,1,2", MidLrWeight = "0.25", UpLrWeight = "1,1,1,0.75",
        };
        using var method = new LoraMethod(model, config, new Generator(2));
        var modules = method.Network.UnetModules;
        // IN02 (down_blocks_0's second resnet and attention) has weight 0: kohya makes no modules there.
        Assert.DoesNotContain(modules, m => ExpectedLrWeight(m.LoraName) == 0);
        Assert.DoesNotContain(modules, m => m.LoraName.StartsWith("lora_unet_down_blocks_0_attentions_1_", StringComparison.Ordinal));
        Assert.Contains(modules, m => m.LoraName.StartsWith("lora_unet_down_blocks_0_attentions_0_", StringComparison.Ordinal));
        Assert.Contains(modules, m => m.LoraName.StartsWith("lora_unet_down_blocks_1_resnets_1_", StringComparison.Ordinal));
        var owner = new Dictionary<Tensor, NetworkModule>(ReferenceEqualityComparer.Instance);
        foreach (var m in modules)
            foreach (var p in m.Parameters()) owner[p] = m;
        var groups = ((TrainingMethod)method).ParameterGroups;
        Assert.Equal(modules.SelectMany(m => m.Parameters()).Count(), groups.Sum(g => g.Parameters.Count));
        foreach (var (parameters, lr) in groups)
            foreach (var p in parameters)
            {
                var name = owner[p].LoraName;
                Assert.True(Math.Abs(lr - 1e-4 * ExpectedLrWeight(name)) <= 1e-18, $"{name}: lr {lr}, expected {1e-4 * ExpectedLrWeight(name)}");
            }
        // One group per block that has modules, in the order its first module comes.
        Assert.Equal(modules.Select(m => LoraBlocks.Index(m.LoraName, false)).Distinct().Count(), groups.Count);
    }

    [Fact]
    public void BlockDimsGiveEachBlockItsRankAndAlpha()
    {
        // Block i gets rank i (IN00 has no modules; 0 would leave a block out), alpha half of it, so every scale is 0.5.
        var config = new TrainingConfig
        {
            BlockDims = string.Join(",", Enumerable.Range(0, 25)),
            BlockAlphas = string.Join(",", Enumerable.Range(0, 25).Select(i => (i / 2.0).ToString(System.Globalization.CultureInfo.InvariantCulture))),
            ConvBlockDims = string.Join(",", Enumerable.Range(0, 25).Select(i => i == 4 ? 0 : 3)),
        };
        var options = LoraMethod.NetworkOptions(config, isSdxl: false);
        var (unet, te, _) = MetaModel("sd15");
        using (unet)
        using (te)
        using (var network = LoraNetwork.Create(unet, te, null, options))
        {
            var byName = network.UnetModules.ToDictionary(m => m.LoraName);
            Assert.Equal((1L, 0.5), (byName["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"].Rank, byName["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"].Scale));
            Assert.Equal(8L, byName["lora_unet_down_blocks_2_attentions_1_proj_out"].Rank);
            Assert.Equal(12L, byName["lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_2"].Rank);
            Assert.Equal(18L, byName["lora_unet_up_blocks_1_attentions_2_transformer_blocks_0_attn2_to_v"].Rank);
            Assert.Equal(24L, byName["lora_unet_up_blocks_3_attentions_2_proj_out"].Rank);
            Assert.All(network.UnetModules.Where(m => !m.LoraName.Contains("resnets", StringComparison.Ordinal) && !m.LoraName.Contains("samplers", StringComparison.Ordinal)),
                m => Assert.Equal(0.5, m.Scale));
            // conv_block_dims: rank 3 for the 3×3 convolutions at conv_alpha's default 1, none in IN04 (its value 0).
            Assert.Equal((3L, 1.0 / 3), (byName["lora_unet_down_blocks_0_downsamplers_0_conv"].Rank, byName["lora_unet_down_blocks_0_downsamplers_0_conv"].Scale));
            Assert.False(byName.ContainsKey("lora_unet_down_blocks_1_resnets_0_conv1"));
            // IN04's 1×1 shortcut is not a 3×3 convolution: it takes block_dims' 4.
            Assert.Equal(4L, byName["lora_unet_down_blocks_1_resnets_0_conv_shortcut"].Rank);
            Assert.Equal(3L, byName["lora_unet_down_blocks_1_resnets_1_conv1"].Rank);
        }
    }

    [Fact]
    public void SdxlBlockDimsFollowTheOriginalLayoutsTwentyThreeBlocks()
    {
        // Block i gets rank 10 + i, so a module's rank tells its block: input_blocks_N is 1 + N, middle_block_N 10 + N,
        // output_blocks_N 13 + N.
        var config = new TrainingConfig { BlockDims = string.Join(",", Enumerable.Range(10, 23)), BlockAlphas = string.Join(",", Enumerable.Repeat(1, 23)) };
        var options = LoraMethod.NetworkOptions(config, isSdxl: true);
        var (unet, te, te2) = MetaModel("sdxl_base");
        using (unet)
        using (te)
        using (te2)
        using (var network = LoraNetwork.Create(unet, te, te2, options))
        {
            var byName = network.UnetModules.ToDictionary(m => m.LoraName);
            Assert.Equal(10L + 5, byName["lora_unet_input_blocks_4_1_proj_in"].Rank);
            Assert.Equal(10L + 11, byName["lora_unet_middle_block_1_transformer_blocks_0_attn1_to_q"].Rank);
            Assert.Equal(10L + 15, byName["lora_unet_output_blocks_2_1_proj_out"].Rank);
            Assert.Equal(1.0 / 15, byName["lora_unet_input_blocks_4_1_proj_in"].Scale, 15);
        }
        Assert.Throws<TrainingConfigException>(() => LoraMethod.NetworkOptions(config with { BlockDims = string.Join(",", Enumerable.Repeat(4, 25)) }, isSdxl: true));
    }
}
