using SdAppliance.Torch;

namespace SdAppliance.Models.Blocks;

/// <summary>
/// A block that can trade compute for memory in training, as diffusers' per-module
/// <c>gradient_checkpointing</c> flag: its sub-layers keep no activations in the forward pass and
/// run again during backward. Has effect only while gradients are being recorded.
/// </summary>
public interface IGradientCheckpointing
{
    bool GradientCheckpointing { get; set; }
}

internal static class Checkpointing
{
    /// <summary>
    /// Calls <paramref name="layer"/>(x, extra), checkpointed when <paramref name="enabled"/> and
    /// autograd is recording. The extra tensor (time embedding, text context) is passed as an
    /// input rather than captured, so its gradient flows out of the checkpoint like x's does.
    /// </summary>
    public static Tensor Call(bool enabled, Func<Tensor, Tensor?, Tensor> layer, Tensor x, Tensor? extra)
    {
        if (!enabled || !Autograd.IsGradEnabled) return layer(x, extra);
        return extra is null
            ? Autograd.Checkpoint(xs => [layer(xs[0], null)], x)[0]
            : Autograd.Checkpoint(xs => [layer(xs[0], xs[1])], x, extra)[0];
    }
}
