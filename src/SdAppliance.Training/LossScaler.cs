using SdAppliance.Torch;

namespace SdAppliance.Training;

/// <summary>
/// Dynamic loss scaling for float16 training (as torch.cuda.amp.GradScaler): the loss is multiplied
/// by the scale, gradients are divided back before clipping; an overflow skips the step and halves
/// the scale, 2000 clean steps double it.
/// </summary>
public sealed class LossScaler
{
    private int cleanSteps;

    public double Scale { get; set; } = 65536;

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
            cleanSteps = 0;
            return false;
        }
        if (++cleanSteps % 2000 == 0) Scale *= 2;
        return true;
    }
}
