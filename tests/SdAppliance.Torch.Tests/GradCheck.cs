using System.Text;

namespace SdAppliance.Torch.Tests;

/// <summary>
/// Finite-difference gradient check, like torch.autograd.gradcheck: the gradient autograd
/// computes for a random projection Σ wᵢ·f(x)ᵢ of the output must match central differences
/// taken in float64.
/// </summary>
internal static class GradCheck
{
    private const double Eps = 1e-6;

    // Central differences have truncation error ~eps²·f''' ≈ 1e-12 and rounding error
    // ~1e-16·|f|/eps ≈ 1e-10 for the O(1) values used here, so a bound of 1e-6 (relative to the
    // gradient, absolute below 1) sits four orders above the noise and flags any real mistake.
    private const double Tolerance = 1e-6;

    /// <summary>
    /// Checks d/dx of <paramref name="f"/> for every input (float64 tensors, used as values only).
    /// Integer arguments (indices, masks) belong in the closure. Each input must get a non-zero
    /// gradient somewhere, so a check cannot pass because a path was cut. The inputs are disposed.
    /// </summary>
    public static void Check(Func<Tensor[], Tensor> f, params Tensor[] inputs)
    {
        foreach (var t in inputs) Assert.Equal(DType.Float64, t.DType);
        var data = inputs.Select(t => t.ToArray<double>()).ToArray();
        var shapes = inputs.Select(t => t.Shape).ToArray();
        foreach (var t in inputs) t.Dispose();

        double[] weights;
        var analytic = new double[inputs.Length][];
        using (torch.NewDisposeScope())
        {
            var leaves = data.Select((d, i) => torch.FromArray<double>(d, shapes[i], DType.Float64).RequiresGrad_()).ToArray();
            var y = f(leaves);
            Assert.Equal(DType.Float64, y.DType);
            weights = Weights(y.NumEl);
            var w = torch.FromArray<double>(weights, y.Shape, DType.Float64);
            var loss = y.Mul(w).Sum();
            loss.Backward();
            for (var i = 0; i < leaves.Length; i++)
                analytic[i] = leaves[i].Grad?.ToArray<double>() ?? new double[data[i].Length];
        }

        var failures = new StringBuilder();
        for (var i = 0; i < inputs.Length; i++)
        {
            var largest = 0.0;
            for (var j = 0; j < data[i].Length; j++)
            {
                var original = data[i][j];
                data[i][j] = original + Eps;
                var plus = Evaluate(f, data, shapes, weights);
                data[i][j] = original - Eps;
                var minus = Evaluate(f, data, shapes, weights);
                data[i][j] = original;
                var numeric = (plus - minus) / (2 * Eps);
                largest = Math.Max(largest, Math.Abs(numeric));
                var a = analytic[i][j];
                if (!(Math.Abs(a - numeric) <= Tolerance * Math.Max(1, Math.Abs(numeric))))
                    failures.AppendLine($"input {i} element {j}: autograd {a:R}, finite difference {numeric:R}");
            }
            if (largest <= 1e-6) failures.AppendLine($"input {i}: the gradient is zero everywhere, nothing was checked");
        }
        Assert.True(failures.Length == 0, failures.ToString());
    }

    private static double Evaluate(Func<Tensor[], Tensor> f, double[][] data, long[][] shapes, double[] weights)
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = Autograd.NoGrad();
        var xs = data.Select((d, i) => torch.FromArray<double>(d, shapes[i], DType.Float64)).ToArray();
        var y = f(xs).ToArray<double>();
        double s = 0;
        for (var k = 0; k < y.Length; k++) s += y[k] * weights[k];
        return s;
    }

    // Random weights of both signs and magnitude in [0.5, 1.5): every output element counts,
    // and a gradient summed over the wrong elements cannot cancel into the right answer.
    private static double[] Weights(long n)
    {
        var random = new Random(20240607);
        var w = new double[n];
        for (var i = 0; i < n; i++) w[i] = (random.Next(2) == 0 ? -1 : 1) * (0.5 + random.NextDouble());
        return w;
    }
}
