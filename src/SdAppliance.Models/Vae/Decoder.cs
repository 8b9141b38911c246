using SdAppliance.Models.Blocks;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Vae;

/// <summary>
/// The VAE decoder, as diffusers' <c>Decoder</c>: <c>conv_in</c>, <c>mid_block</c>,
/// <c>up_blocks</c> (widest first, each doubling the resolution but the last, with
/// layers_per_block + 1 resnets), <c>conv_norm_out</c>, SiLU, <c>conv_out</c>. The up blocks are
/// registered before the mid block, as in diffusers (state-dict order).
/// </summary>
public sealed class Decoder : Module<Tensor, Tensor>, IGradientCheckpointing
{
    private readonly Conv2d convIn;
    private readonly ModuleList<UpDecoderBlock2D> upBlocks;
    private readonly UNetMidBlock2D midBlock;
    private readonly GroupNorm convNormOut;
    private readonly Conv2d convOut;

    public Decoder(int inChannels, int outChannels, IReadOnlyList<int> blockOutChannels, int layersPerBlock = 2,
        int normNumGroups = 32, string actFn = "silu", bool midBlockAddAttention = true, ModuleOptions? options = null)
    {
        var o = options ?? ModuleOptions.Default;
        ActFn = Activation.Check(actFn);
        convIn = RegisterModule("conv_in", o.Conv2d(inChannels, blockOutChannels[^1], 3, padding: 1));
        upBlocks = RegisterModule("up_blocks", new ModuleList<UpDecoderBlock2D>());
        midBlock = RegisterModule("mid_block", new UNetMidBlock2D(blockOutChannels[^1], null, resnetEps: 1e-6, resnetActFn: actFn,
            resnetGroups: normNumGroups, addAttention: midBlockAddAttention, attentionHeadDim: blockOutChannels[^1], options: o));
        var reversed = blockOutChannels.Reverse().ToArray();
        var outputChannel = reversed[0];
        for (var i = 0; i < reversed.Length; i++)
        {
            var prevOutputChannel = outputChannel;
            outputChannel = reversed[i];
            upBlocks.Append(new UpDecoderBlock2D(prevOutputChannel, outputChannel, layersPerBlock + 1, resnetEps: 1e-6,
                resnetActFn: actFn, resnetGroups: normNumGroups, addUpsample: i != reversed.Length - 1, options: o));
        }
        convNormOut = RegisterModule("conv_norm_out", o.GroupNorm(normNumGroups, blockOutChannels[0], 1e-6));
        convOut = RegisterModule("conv_out", o.Conv2d(blockOutChannels[0], outChannels, 3, padding: 1));
    }

    public string ActFn { get; }

    public bool GradientCheckpointing
    {
        get => midBlock.GradientCheckpointing;
        set
        {
            midBlock.GradientCheckpointing = value;
            foreach (var b in upBlocks) b.GradientCheckpointing = value;
        }
    }

    /// <summary>Latents [B, latent, h, w] (after post_quant_conv) → images [B, out, h·f, w·f].</summary>
    public override Tensor Forward(Tensor input)
    {
        // diffusers runs the up blocks in their parameters' dtype (they may be upcast alone).
        var upDType = upBlocks.Parameters().First().DType;
        return Chain(input, [convIn.Forward, h => midBlock.Forward(h), h => h.To(upDType),
            .. upBlocks.Select(block => (Func<Tensor, Tensor>)block.Forward), convNormOut.Forward, h => Activation.ApplyOverOwned(ActFn, h), convOut.Forward]);
    }
}
