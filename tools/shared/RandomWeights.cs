using SdAppliance.Torch.Nn;

namespace SdAppliance.Tools;

/// <summary>Full-size modules with random weights for the benchmarks (no real checkpoint can be downloaded).</summary>
internal static class RandomWeights
{
    /// <summary>
    /// Built without initialisation (filling 3.4 GB the default way is slow), then norms set to identity and everything
    /// else to N(0, 0.02²), as transformers initialise: no NaN, no denormals, activations of O(1) that a GroupNorm
    /// renormalises at every block, so the kernels run at their normal speed.
    /// </summary>
    public static T Module<T>(Func<T> build) where T : Module
    {
        T module;
        using (Init.Skip()) module = build();
        foreach (var (name, p) in module.NamedParameters())
        {
            if (name.EndsWith(".bias", StringComparison.Ordinal)) Init.Zeros_(p);
            else if (name.Contains("norm", StringComparison.Ordinal)) Init.Ones_(p);
            else Init.Normal_(p, 0, 0.02);
        }
        return module.Eval();
    }
}
