using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Blocks;

/// <summary>
/// Halves the resolution with a strided 3×3 convolution <c>conv</c>, as diffusers'
/// <c>Downsample2D(use_conv=True)</c>. The UNet pads 1 on every side; the VAE (padding 0) pads
/// only right and bottom by one, as the original LDM code did.
/// </summary>
public sealed class Downsample2D : Module<Tensor, Tensor>
{
    private readonly Conv2d conv;

    public Downsample2D(long channels, long? outChannels = null, long padding = 1, long kernelSize = 3, bool bias = true,
        ModuleOptions? options = null)
    {
        Padding = padding;
        conv = RegisterModule("conv", (options ?? ModuleOptions.Default).Conv2d(channels, outChannels ?? channels, kernelSize,
            stride: 2, padding: padding, bias: bias));
    }

    public long Padding { get; }

    public override Tensor Forward(Tensor input)
    {
        using var scope = torch.NewDisposeScope();
        if (Padding == 0) input = Functional.Pad(input, [0, 1, 0, 1]);
        return scope.MoveToOuterScope(conv.Forward(input));
    }
}
