namespace SdAppliance.Torch.Tests;

/// <summary>
/// The optimizers' update rules written out independently, elementwise in double precision,
/// from the formulas of torch.optim (Adam, AdamW, SGD), lion-pytorch and transformers' Adafactor.
/// Each takes the parameter values and one gradient per step and returns the values after them.
/// </summary>
internal static class OptimReference
{
    public static double[] AdamRef(double[] p0, IReadOnlyList<double[]> grads, double lr, double beta1, double beta2, double eps,
        double weightDecay, bool decoupled, bool amsgrad = false)
    {
        var p = (double[])p0.Clone();
        var m = new double[p.Length];
        var v = new double[p.Length];
        var vMax = new double[p.Length];
        for (var t = 1; t <= grads.Count; t++)
        {
            for (var i = 0; i < p.Length; i++)
            {
                var g = grads[t - 1][i];
                if (decoupled) p[i] *= 1 - lr * weightDecay;
                else g += weightDecay * p[i];
                m[i] = beta1 * m[i] + (1 - beta1) * g;
                v[i] = beta2 * v[i] + (1 - beta2) * g * g;
                vMax[i] = Math.Max(vMax[i], v[i]);
                var mHat = m[i] / (1 - Math.Pow(beta1, t));
                var second = amsgrad ? vMax[i] : v[i];
                var denom = Math.Sqrt(second) / Math.Sqrt(1 - Math.Pow(beta2, t)) + eps;
                p[i] -= lr * mHat / denom;
            }
        }
        return p;
    }

    public static double[] SgdRef(double[] p0, IReadOnlyList<double[]> grads, double lr, double momentum, double dampening,
        double weightDecay, bool nesterov)
    {
        var p = (double[])p0.Clone();
        var buf = new double[p.Length];
        for (var t = 0; t < grads.Count; t++)
        {
            for (var i = 0; i < p.Length; i++)
            {
                var d = grads[t][i] + weightDecay * p[i];
                if (momentum != 0)
                {
                    buf[i] = t == 0 ? d : momentum * buf[i] + (1 - dampening) * d;
                    d = nesterov ? d + momentum * buf[i] : buf[i];
                }
                p[i] -= lr * d;
            }
        }
        return p;
    }

    public static double[] LionRef(double[] p0, IReadOnlyList<double[]> grads, double lr, double beta1, double beta2, double weightDecay)
    {
        var p = (double[])p0.Clone();
        var m = new double[p.Length];
        foreach (var grad in grads)
        {
            for (var i = 0; i < p.Length; i++)
            {
                var c = beta1 * m[i] + (1 - beta1) * grad[i];
                // A sign taken of a value this close to 0 could differ in float32: the data must avoid it.
                if (Math.Abs(c) < 1e-4) throw new InvalidOperationException("test data too close to a sign change");
                p[i] = p[i] * (1 - lr * weightDecay) - lr * Math.Sign(c);
                m[i] = beta2 * m[i] + (1 - beta2) * grad[i];
            }
        }
        return p;
    }

    public sealed record AdafactorConfig(double Lr = 0, double Eps1 = 1e-30, double Eps2 = 1e-3, double ClipThreshold = 1.0,
        double DecayRate = -0.8, double? Beta1 = null, double WeightDecay = 0, bool ScaleParameter = true, bool RelativeStep = true,
        bool WarmupInit = false);

    /// <summary>Adafactor on a parameter of shape [rows, cols] stored row-major (rows = 0 for a 1-D parameter: not factored).</summary>
    public static double[] AdafactorRef(double[] p0, int rows, IReadOnlyList<double[]> grads, AdafactorConfig c)
    {
        var p = (double[])p0.Clone();
        var n = p.Length;
        var factored = rows > 0;
        var cols = factored ? n / rows : n;
        var row = new double[Math.Max(rows, 1)];
        var col = new double[cols];
        var v = new double[n];
        var m = new double[n];
        for (var t = 1; t <= grads.Count; t++)
        {
            var g = grads[t - 1];
            var rms = Math.Sqrt(p.Sum(x => x * x) / n);
            var rel = c.RelativeStep ? Math.Min(c.WarmupInit ? 1e-6 * t : 1e-2, 1 / Math.Sqrt(t)) : c.Lr;
            var lr = (c.ScaleParameter ? Math.Max(c.Eps2, rms) : 1.0) * rel;
            var beta2t = 1 - Math.Pow(t, c.DecayRate);
            var sq = g.Select(x => x * x + c.Eps1).ToArray();
            var u = new double[n];
            if (factored)
            {
                for (var r = 0; r < rows; r++)
                    row[r] = beta2t * row[r] + (1 - beta2t) * Enumerable.Range(0, cols).Average(j => sq[r * cols + j]);
                for (var j = 0; j < cols; j++)
                    col[j] = beta2t * col[j] + (1 - beta2t) * Enumerable.Range(0, rows).Average(r => sq[r * cols + j]);
                var rowMean = row.Average();
                for (var r = 0; r < rows; r++)
                    for (var j = 0; j < cols; j++)
                        u[r * cols + j] = g[r * cols + j] / Math.Sqrt(row[r] / rowMean * col[j]);
            }
            else
            {
                for (var i = 0; i < n; i++)
                {
                    v[i] = beta2t * v[i] + (1 - beta2t) * sq[i];
                    u[i] = g[i] / Math.Sqrt(v[i]);
                }
            }
            var uRms = Math.Sqrt(u.Sum(x => x * x) / n);
            var scale = lr / Math.Max(uRms / c.ClipThreshold, 1.0);
            for (var i = 0; i < n; i++)
            {
                u[i] *= scale;
                if (c.Beta1 is { } b1)
                {
                    m[i] = b1 * m[i] + (1 - b1) * u[i];
                    u[i] = m[i];
                }
                p[i] = p[i] - c.WeightDecay * lr * p[i] - u[i];
            }
        }
        return p;
    }

    public sealed record ProdigyConfig(double Lr = 1, double Beta1 = 0.9, double Beta2 = 0.999, double Eps = 1e-8, double WeightDecay = 0,
        bool Decouple = true, bool UseBiasCorrection = false, bool SafeguardWarmup = false, double D0 = 1e-6, double DCoef = 1,
        double GrowthRate = double.PositiveInfinity);

    /// <summary>
    /// prodigyopt's step over several parameters (the estimate is shared): each step a sweep that moves the running sums
    /// with the old estimate d and step size d·lr, a new estimate from them, then Adam's update with the old step size.
    /// Returns the parameters and the estimate d after every step. Everything is float64 but the parameters, which are
    /// stored as float32 after each step as the tensors are.
    /// </summary>
    public static (double[][] Params, double[] Estimates) ProdigyRef(double[][] init, IReadOnlyList<double[][]> grads, ProdigyConfig c)
    {
        var p = init.Select(x => (double[])x.Clone()).ToArray();
        var p0 = init.Select(x => (double[])x.Clone()).ToArray();
        var m = init.Select(x => new double[x.Length]).ToArray();
        var v = init.Select(x => new double[x.Length]).ToArray();
        var s = init.Select(x => new double[x.Length]).ToArray();
        var beta3 = Math.Sqrt(c.Beta2);
        double d = c.D0, dMax = c.D0, numerator = 0;
        var estimates = new double[grads.Count];
        for (var k = 0; k < grads.Count; k++)
        {
            var bias = c.UseBiasCorrection ? Math.Sqrt(1 - Math.Pow(c.Beta2, k + 1)) / (1 - Math.Pow(c.Beta1, k + 1)) : 1;
            var dlr = d * c.Lr * bias;
            numerator *= beta3;
            double denominator = 0;
            for (var j = 0; j < p.Length; j++)
            {
                for (var i = 0; i < p[j].Length; i++)
                {
                    var g = grads[k][j][i] + (c.Decouple ? 0 : c.WeightDecay * p[j][i]);
                    numerator += d / c.D0 * dlr * g * (p0[j][i] - p[j][i]);
                    m[j][i] = c.Beta1 * m[j][i] + d * (1 - c.Beta1) * g;
                    v[j][i] = c.Beta2 * v[j][i] + d * d * (1 - c.Beta2) * g * g;
                    s[j][i] = beta3 * s[j][i] + (c.SafeguardWarmup ? d / c.D0 * d : d / c.D0 * dlr) * g;
                    denominator += Math.Abs(s[j][i]);
                }
            }
            var dHat = c.DCoef * numerator / denominator;
            if (d == c.D0) d = Math.Max(d, dHat);
            dMax = Math.Max(dMax, dHat);
            d = Math.Min(dMax, d * c.GrowthRate);
            for (var j = 0; j < p.Length; j++)
            {
                for (var i = 0; i < p[j].Length; i++)
                {
                    // The parameters are float32 tensors, rounded after the decay and after the step as two in-place
                    // operations round them: that rounding is what p0 − p sees while the moves are as small as d0.
                    if (c.Decouple) p[j][i] = (float)(p[j][i] - c.WeightDecay * dlr * p[j][i]);
                    p[j][i] = (float)(p[j][i] - dlr * m[j][i] / (Math.Sqrt(v[j][i]) + d * c.Eps));
                }
            }
            estimates[k] = d;
        }
        return (p, estimates);
    }

    /// <summary>Deterministic values of magnitude in [0.2, 1] with random signs: no gradient near 0.</summary>
    public static float[] Values(Random random, int n) =>
        Enumerable.Range(0, n).Select(_ => (float)((random.Next(2) == 0 ? -1 : 1) * (0.2 + 0.8 * random.NextDouble()))).ToArray();

    public static double[] ToDouble(float[] x) => x.Select(v => (double)v).ToArray();
}
