using SdAppliance.Torch;

namespace SdAppliance.Models.Blocks;

/// <summary>
/// A down block of the UNet: returns its output and the skip tensors ("res samples") the up path
/// will concatenate, one per resnet and one after the downsampler, as diffusers' down blocks.
/// </summary>
public interface IUNetDownBlock : IGradientCheckpointing
{
    /// <summary>
    /// <paramref name="temb"/> is the time embedding [B, T]; <paramref name="encoderHiddenStates"/>
    /// the text context (ignored by blocks without attention). The caller owns every returned
    /// tensor: <c>Hidden</c> is a separate handle on the last skip tensor.
    /// </summary>
    (Tensor Hidden, List<Tensor> ResSamples) Forward(Tensor hiddenStates, Tensor? temb, Tensor? encoderHiddenStates);
}

/// <summary>The bottleneck of the UNet.</summary>
public interface IUNetMidBlock : IGradientCheckpointing
{
    Tensor Forward(Tensor hiddenStates, Tensor? temb, Tensor? encoderHiddenStates);
}

/// <summary>An up block of the UNet: consumes as many skip tensors as it has resnets, last one first.</summary>
public interface IUNetUpBlock : IGradientCheckpointing
{
    /// <summary>How many skip tensors <see cref="Forward"/> takes.</summary>
    int ResnetCount { get; }

    /// <param name="resSamples">Exactly <see cref="ResnetCount"/> skip tensors in down-path order (the last is used first); not disposed.</param>
    /// <param name="upsampleSize">(H, W) for the upsampler when the input size is not a multiple of the UNet's factor.</param>
    Tensor Forward(Tensor hiddenStates, IReadOnlyList<Tensor> resSamples, Tensor? temb, Tensor? encoderHiddenStates, long[]? upsampleSize);
}
