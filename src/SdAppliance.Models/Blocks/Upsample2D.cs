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
        // Nearest upsampling of bfloat16 is missing from older libtorch builds; diffusers goes
        // through float32 for the same reason, which changes no value.
        var dtype = input.DType;
        using var source = dtype == DType.BFloat16 ? input.Float() : input.Alias();
        using var upsampled = outputSize is null
            ? Functional.Interpolate(source, scaleFactor: 2.0, mode: "nearest")
            : Functional.Interpolate(source, size: outputSize, mode: "nearest");
        using var restored = dtype == DType.BFloat16 ? upsampled.To(dtype) : upsampled.Alias();
        return conv.Forward(restored);
    }
}
