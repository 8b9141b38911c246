using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Blocks;

/// <summary>
/// Where new parameters live and how they start: PyTorch's factory arguments (device, dtype)
/// plus the generator that initialises them (null: the default generator). Every block passes
/// its options down to its layers, so a whole model is built directly in place, e.g. float16 on
/// CUDA without a float32 copy on the host. Wrap construction in <see cref="Init.Skip"/> when the
/// weights are about to be loaded.
/// </summary>
public sealed record ModuleOptions(Device? Device = null, DType DType = DType.Float32, Generator? Generator = null)
{
    public static ModuleOptions Default { get; } = new();

    public Linear Linear(long inFeatures, long outFeatures, bool bias = true) =>
        new(inFeatures, outFeatures, bias, Device, DType, Generator);

    public Conv2d Conv2d(long inChannels, long outChannels, long kernelSize, long stride = 1, long padding = 0, bool bias = true) =>
        new(inChannels, outChannels, kernelSize, stride, padding, bias: bias, device: Device, dtype: DType, generator: Generator);

    public GroupNorm GroupNorm(long numGroups, long numChannels, double eps) =>
        new(numGroups, numChannels, eps, affine: true, Device, DType);

    public LayerNorm LayerNorm(long dim, double eps, bool elementwiseAffine = true) =>
        new(dim, eps, elementwiseAffine, bias: true, Device, DType);
}
