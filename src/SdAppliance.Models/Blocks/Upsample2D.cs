using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Blocks;

/// <summary>
/// Doubles the resolution (nearest neighbour) and applies the 3×3 convolution <c>conv</c>, as
/// diffusers' <c>Upsample2D(use_conv=True)</c>. An explicit output size replaces the doubling when
/// the UNet's input is not a multiple of its total downsampling factor.
/// </summary>
public sealed class Upsample2D : Module<Tensor, Tensor>
{
    private readonly Conv2d conv;

    public Upsample2D(long channels, long? outChannels = null, long kernelSize = 3, long padding = 1, bool bias = true,
        ModuleOptions? options = null) =>
        conv = RegisterModule("conv", (options ?? ModuleOptions.Default).Conv2d(channels, outChannels ?? channels, kernelSize,
            padding: padding, bias: bias));

    public override Tensor Forward(Tensor input) => Forward(input, null);

    /// <param name="outputSize">(H, W) to interpolate to; null doubles both.</param>
    public Tensor Forward(Tensor input, long[]? outputSize)
    {
        using var scope = torch.NewDisposeScope();
        // Nearest upsampling of bfloat16 is missing from older libtorch builds; diffusers goes
        // through float32 for the same reason, which changes no value.
        var dtype = input.DType;
        if (dtype == DType.BFloat16) input = input.Float();
        var hiddenStates = outputSize is null
            ? Functional.Interpolate(input, scaleFactor: 2.0, mode: "nearest")
            : Functional.Interpolate(input, size: outputSize, mode: "nearest");
        if (dtype == DType.BFloat16) hiddenStates = hiddenStates.To(dtype);
        return scope.MoveToOuterScope(conv.Forward(hiddenStates));
    }
}
