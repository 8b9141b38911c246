using SdAppliance.Models.Blocks;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Vae;

/// <summary>
/// The VAE encoder, as diffusers' <c>Encoder</c>: <c>conv_in</c>, <c>down_blocks</c> (each halves
/// the resolution but the last), <c>mid_block</c> (with self-attention), <c>conv_norm_out</c>,
/// SiLU, <c>conv_out</c> to 2 × latent channels (mean and log-variance) with <c>double_z</c>.
/// </summary>
public sealed class Encoder : Module<Tensor, Tensor>, IGradientCheckpointing
{
    private readonly Conv2d convIn;
    private readonly ModuleList<DownEncoderBlock2D> downBlocks;
    private readonly UNetMidBlock2D midBlock;
    private readonly GroupNorm convNormOut;
    private readonly Conv2d convOut;

    public Encoder(int inChannels, int outChannels, IReadOnlyList<int> blockOutChannels, int layersPerBlock = 2,
        int normNumGroups = 32, string actFn = "silu", bool doubleZ = true, bool midBlockAddAttention = true, ModuleOptions? options = null)
    {
        var o = options ?? ModuleOptions.Default;
        ActFn = Activation.Check(actFn);
        convIn = RegisterModule("conv_in", o.Conv2d(inChannels, blockOutChannels[0], 3, padding: 1));
        var blocks = new List<DownEncoderBlock2D>();
        var outputChannel = blockOutChannels[0];
        for (var i = 0; i < blockOutChannels.Count; i++)
        {
            var inputChannel = outputChannel;
            outputChannel = blockOutChannels[i];
            // The original LDM encoder pads asymmetrically (right/bottom) before a padding-0 conv.
            blocks.Add(new DownEncoderBlock2D(inputChannel, outputChannel, layersPerBlock, resnetEps: 1e-6, resnetActFn: actFn,
                resnetGroups: normNumGroups, addDownsample: i != blockOutChannels.Count - 1, downsamplePadding: 0, options: o));
        }
        downBlocks = RegisterModule("down_blocks", new ModuleList<DownEncoderBlock2D>(blocks));
        midBlock = RegisterModule("mid_block", new UNetMidBlock2D(blockOutChannels[^1], null, resnetEps: 1e-6, resnetActFn: actFn,
            resnetGroups: normNumGroups, addAttention: midBlockAddAttention, attentionHeadDim: blockOutChannels[^1], options: o));
        convNormOut = RegisterModule("conv_norm_out", o.GroupNorm(normNumGroups, blockOutChannels[^1], 1e-6));
        convOut = RegisterModule("conv_out", o.Conv2d(blockOutChannels[^1], doubleZ ? 2 * outChannels : outChannels, 3, padding: 1));
    }

    public string ActFn { get; }

    public bool GradientCheckpointing
    {
        get => midBlock.GradientCheckpointing;
        set
        {
            midBlock.GradientCheckpointing = value;
            foreach (var b in downBlocks) b.GradientCheckpointing = value;
        }
    }

    /// <summary>Images [B, in, H, W] → [B, 2·latent, H/f, W/f].</summary>
    public override Tensor Forward(Tensor input) =>
        Chain(input, [convIn.Forward, .. downBlocks.Select(block => (Func<Tensor, Tensor>)block.Forward),
            h => midBlock.Forward(h), convNormOut.Forward, h => Activation.ApplyOverOwned(ActFn, h), convOut.Forward]);
}
