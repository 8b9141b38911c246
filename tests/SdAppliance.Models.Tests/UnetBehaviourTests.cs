using SdAppliance.Models.Blocks;
using SdAppliance.Models.Unet;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using static SdAppliance.Models.Tests.UnetVaeFixtures;

namespace SdAppliance.Models.Tests;


/// <summary>UNet behaviour beyond the goldens: odd sizes, SDXL conditioning, checkpointing, ownership.</summary>
public sealed class UnetBehaviourTests
{
    /// <summary>A two-level SDXL-shaped UNet: DownBlock2D first, linear projections, 2 transformer layers on level 2, text_time embedding.</summary>
    private const string TinyXlConfig = """
        {
          "block_out_channels": [32, 64], "layers_per_block": 1, "norm_num_groups": 8, "cross_attention_dim": 32,
          "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"], "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
          "attention_head_dim": [2, 4], "transformer_layers_per_block": [1, 2], "use_linear_projection": true,
          "addition_embed_type": "text_time", "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 64,
          "upcast_attention": null, "sample_size": 8
        }
        """;

    private static UNet2DConditionModel TinyXl(ulong seed)
    {
        using var generator = new Generator(seed);
        return new UNet2DConditionModel(UNet2DConditionConfig.Parse(TinyXlConfig), new ModuleOptions(Generator: generator)).Eval();
    }

    [Fact]
    public void SizesNotDivisibleByTheUpsamplingFactorComeBackTheSameSize()
    {
        using var unet = LoadTinyUnet();
        Assert.Equal(1, unet.NumUpsamplers);
        using var generator = new Generator(11);
        using var sample = torch.Randn([1, 4, 9, 7], generator);
        using var context = torch.Randn([1, 77, 32], generator);
        using var inference = Autograd.InferenceMode();
        using var output = unet.Forward(sample, 10.0, context);
        Assert.Equal([1L, 4, 9, 7], output.Shape);
    }

    [Fact]
    public void SdxlShapedUnetUsesTextEmbedsAndTimeIds()
    {
        using var unet = TinyXl(12);
        using var sd = unet.StateDict();
        Assert.Contains("add_embedding.linear_1.weight", sd.Keys);
        // text_embeds (16) + 6 time ids × 8 sinusoidal features = 64 in, time_embed_dim 4 × 32 out.
        Assert.Equal([128L, 64], sd["add_embedding.linear_1.weight"].Shape);
        Assert.Contains("mid_block.attentions.0.transformer_blocks.1.attn2.to_k.weight", sd.Keys);
        Assert.DoesNotContain(sd.Keys, k => k.StartsWith("down_blocks.0.attentions", StringComparison.Ordinal));
        Assert.Equal([64L, 64], sd["down_blocks.1.attentions.0.proj_in.weight"].Shape);

        using var generator = new Generator(13);
        using var sample = torch.Randn([2, 4, 8, 8], generator);
        using var context = torch.Randn([2, 77, 32], generator);
        using var textEmbeds = torch.Randn([2, 16], generator);
        using var timeIds = torch.Tensor(new double[] { 64, 64, 0, 0, 64, 64, 64, 64, 0, 0, 64, 64 }, 2, 6);
        using var otherIds = torch.Tensor(new double[] { 128, 96, 8, 0, 64, 64, 64, 64, 0, 0, 64, 64 }, 2, 6);
        using var inference = Autograd.InferenceMode();
        using var a = unet.Forward(sample, 500.0, context, new UNetAddedConditions(textEmbeds, timeIds));
        using var b = unet.Forward(sample, 500.0, context, new UNetAddedConditions(textEmbeds, otherIds));
        Assert.Equal([2L, 4, 8, 8], a.Shape);
        using var itemA = a.Narrow(0, 0, 1);
        using var itemB = b.Narrow(0, 0, 1);
        using var secondA = a.Narrow(0, 1, 1);
        using var secondB = b.Narrow(0, 1, 1);
        // Only the first image's size conditioning changed: only its prediction moves.
        Assert.True(MaxAbsDiff(itemA, itemB) > 1e-4);
        Assert.Equal(Values(secondA), Values(secondB));

        var e = Assert.Throws<ArgumentException>(() => unet.Forward(sample, 500.0, context));
        Assert.Contains("time_ids", e.Message);
    }

    [Fact]
    public void GradientCheckpointingGivesTheSameOutputAndGradients()
    {
        using var unet = LoadTinyUnet().Train();
        using var generator = new Generator(14);
        using var sample = torch.Randn([2, 4, 8, 8], generator);
        using var contextValues = torch.Randn([2, 77, 32], generator);
        using var timesteps = torch.Tensor(new long[] { 900, 20 });

        (double[] Output, double[] Grads) Run()
        {
            unet.ZeroGrad();
            using var context = contextValues.Clone().RequiresGrad_();
            using var output = unet.Forward(sample, timesteps, context);
            using (var squared = output.Square())
            using (var loss = squared.Mean())
                loss.Backward();
            var grads = new List<double>();
            foreach (var p in unet.Parameters().Concat([context]))
            {
                using var g = p.Grad;
                Assert.NotNull(g);
                grads.AddRange(Values(g));
            }
            return (Values(output), [.. grads]);
        }

        var plain = Run();
        unet.EnableGradientCheckpointing();
        Assert.All(unet.Modules().OfType<IGradientCheckpointing>(), m => Assert.True(m.GradientCheckpointing));
        var checkpointed = Run();
        unet.DisableGradientCheckpointing();

        // The recomputation runs the same kernels on the same inputs: equal up to float32 summation
        // order in the backward pass (gradients accumulate in a different order), far below 1e-6.
        Assert.Equal(plain.Output, checkpointed.Output);
        Assert.Equal(plain.Grads.Length, checkpointed.Grads.Length);
        var scale = plain.Grads.Max(Math.Abs);
        for (var i = 0; i < plain.Grads.Length; i++)
            Assert.True(Math.Abs(plain.Grads[i] - checkpointed.Grads[i]) <= 1e-6 * scale, $"gradient {i}: {plain.Grads[i]} vs {checkpointed.Grads[i]}");
    }

    [Fact]
    public void ForwardLeavesNoIntermediateAlive()
    {
        using var unet = LoadTinyUnet();
        using var generator = new Generator(15);
        using var sample = torch.Randn([2, 4, 8, 8], generator);
        using var context = torch.Randn([2, 77, 32], generator);
        using var inference = Autograd.InferenceMode();
        using var scope = torch.NewDisposeScope();
        using (unet.Forward(sample, 999.0, context)) { }
        // Every tensor the forward pass made was created inside the scope; none may still be alive.
        Assert.Equal(0, scope.Count);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TrainingStepLeavesNoIntermediateAlive(bool checkpointing)
    {
        // With autograd recording (and, checkpointed, the blocks run again inside backward), the
        // graph holds what backward needs: the forward's own handles must all be gone.
        using var unet = LoadTinyUnet().Train();
        unet.EnableGradientCheckpointing(checkpointing);
        using var generator = new Generator(18);
        using var sample = torch.Randn([1, 4, 8, 8], generator);
        using var context = torch.Randn([1, 77, 32], generator);
        using var scope = torch.NewDisposeScope();
        using (var output = unet.Forward(sample, 500.0, context))
        using (var squared = output.Square())
        using (var loss = squared.Mean())
            loss.Backward();
        Assert.Equal(0, scope.Count);
        foreach (var p in unet.Parameters())
        {
            using var grad = p.Grad;
            Assert.NotNull(grad);
        }
    }

    [Fact]
    public void SdxlForwardLeavesNoIntermediateAlive()
    {
        using var unet = TinyXl(16);
        using var generator = new Generator(17);
        using var sample = torch.Randn([1, 4, 8, 8], generator);
        using var context = torch.Randn([1, 77, 32], generator);
        using var textEmbeds = torch.Randn([1, 16], generator);
        using var timeIds = torch.Tensor(new double[] { 64, 64, 0, 0, 64, 64 }, 1, 6);
        using var inference = Autograd.InferenceMode();
        using var scope = torch.NewDisposeScope();
        using (unet.Forward(sample, 1.0, context, new UNetAddedConditions(textEmbeds, timeIds))) { }
        Assert.Equal(0, scope.Count);
    }
}
