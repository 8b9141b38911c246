using SdAppliance.Torch;
using SdAppliance.Training.Runs;

namespace SdAppliance.Training;

/// <summary>
/// Dynamic loss scaling for float16 training (as torch.cuda.amp.GradScaler): the loss is multiplied
/// by the scale, gradients are divided back before clipping; an overflow skips the step and halves
/// the scale, 2000 clean steps in a row double it.
/// </summary>
/// <remarks>
/// In a data-parallel run the gradients it reads are already summed over the ranks (an infinity on one rank is one on
/// all), so every rank takes the same decision and the scales never part.
/// </remarks>
public sealed class LossScaler
{
    /// <summary>GradScaler's growth_interval.</summary>
    public const int GrowthInterval = 2000;

    public double Scale { get; set; } = 65536;

    /// <summary>Clean steps since the scale last changed (GradScaler's <c>_growth_tracker</c>), saved so that a resumed run grows it at the same step.</summary>
    public int GrowthTracker { get; set; }

    /// <summary>Divides every gradient by the scale; false (and the scale halved) when one is not finite, so the step must be skipped.</summary>
    public bool Unscale(IReadOnlyList<Tensor> parameters)
    {
        using var noGrad = Autograd.NoGrad();
        var finite = true;
        foreach (var p in parameters)
        {
            using var grad = p.Grad;
            if (grad is null) continue;
            grad.Div_(Scale);
            using var isFinite = grad.IsFinite();
            using var ok = isFinite.All();
            finite &= ok.Item() != 0;
        }
        if (!finite)
        {
            Scale /= 2;
            GrowthTracker = 0;
            return false;
        }
        if (++GrowthTracker == GrowthInterval)
        {
            Scale *= 2;
            GrowthTracker = 0;
        }
        return true;
    }

    internal void SaveTo(RunState state)
    {
        state.LossScale = Scale;
        state.LossScaleGrowthTracker = GrowthTracker;
    }

    internal void RestoreFrom(RunState state)
    {
        Scale = state.LossScale;
        GrowthTracker = state.LossScaleGrowthTracker;
    }
}
