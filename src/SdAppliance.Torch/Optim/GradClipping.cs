namespace SdAppliance.Torch.Optim;

/// <summary>Gradient clipping, as <c>torch.nn.utils.clip_grad_norm_</c> / <c>clip_grad_value_</c>.</summary>
public static class GradClipping
{
    /// <summary>
    /// Scales all gradients together so that their joint <paramref name="normType"/>-norm is at most
    /// <paramref name="maxNorm"/> (coefficient maxNorm / (total + 1e-6), capped at 1). Parameters
    /// without a gradient are skipped. Returns the total norm before clipping as a 0-d tensor on
    /// the first gradient's device (no host sync); the caller owns it.
    /// </summary>
    public static Tensor ClipGradNorm(IEnumerable<Tensor> parameters, double maxNorm, double normType = 2, bool errorIfNonfinite = false)
    {
        Tensor total;
        using (var scope = torch.NewDisposeScope())
        using (Autograd.NoGrad())
        {
            var grads = new List<Tensor>();
            foreach (var p in parameters)
                if (p.Grad is { } g) grads.Add(g);
            if (grads.Count == 0) return torch.Scalar(0.0).MoveToOuterScope();

            var device = grads[0].Device;
            var norms = new List<Tensor>(grads.Count);
            foreach (var g in grads) norms.Add(OptimMath.VectorNorm(g, normType).To(device));
            total = OptimMath.VectorNorm(OptimMath.Stack(norms), normType);
            if (errorIfNonfinite && !double.IsFinite(total.Item()))
                throw new InvalidOperationException(
                    $"the total norm of order {normType} of the gradients is non-finite, so it cannot be clipped (pass errorIfNonfinite: false to skip this check)");

            // As PyTorch, always multiply (a coefficient of 1 changes nothing) to avoid a host sync.
            var coef = total.Add(1e-6).Reciprocal_().Mul_(maxNorm).ClampMax_(1.0);
            foreach (var g in grads) g.Mul_(coef.To(g.Device));
            total.MoveToOuterScope();
        }
        return total;
    }

    /// <summary>Clamps every gradient element into [−clipValue, clipValue].</summary>
    public static void ClipGradValue(IEnumerable<Tensor> parameters, double clipValue)
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = Autograd.NoGrad();
        foreach (var p in parameters)
            p.Grad?.Clamp_(-clipValue, clipValue);
    }
}
