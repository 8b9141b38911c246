namespace SdAppliance.Torch.Tests;

/// <summary>Assertions and double-precision reference math shared by the operation tests.</summary>
internal static class TestSupport
{
    /// <summary>
    /// Float32 results of elementwise ops are within a few ulps (1 ulp ≈ 1.2e-7 relative) of the
    /// exact value; 1e-6 relative allows ~8 ulps of accumulated rounding, far below any real bug.
    /// </summary>
    public const double Float32Rtol = 1e-6;

    /// <summary>Absolute floor for float32 values near zero, where a relative bound means nothing.</summary>
    public const double Float32Atol = 1e-7;

    /// <summary>Float64 ops agree with double C# loops to rounding (≈1e-16 per step over a few dozen steps).</summary>
    public const double Float64Tol = 1e-12;

    public static double[] Values(Tensor t)
    {
        using var d = t.To(DType.Float64);
        return d.ToArray<double>();
    }

    public static bool[] Bools(Tensor t)
    {
        Assert.Equal(DType.Bool, t.DType);
        return t.ToArray<byte>().Select(b => b != 0).ToArray();
    }

    public static long[] Longs(Tensor t)
    {
        using var l = t.To(DType.Int64);
        return l.ToArray<long>();
    }

    /// <summary>|expected − actual| ≤ atol + rtol·|expected| elementwise, with the first offender in the message.</summary>
    public static void AssertClose(IReadOnlyList<double> expected, Tensor actual, double rtol = Float32Rtol, double atol = Float32Atol)
    {
        var a = Values(actual);
        Assert.Equal(expected.Count, a.Length);
        for (var i = 0; i < a.Length; i++)
        {
            var e = expected[i];
            if (double.IsNaN(e) && double.IsNaN(a[i])) continue;
            if (double.IsInfinity(e) && e == a[i]) continue;
            var ok = Math.Abs(e - a[i]) <= atol + rtol * Math.Abs(e);
            Assert.True(ok, $"element {i}: expected {e:R}, got {a[i]:R} (|diff| {Math.Abs(e - a[i]):E2})");
        }
    }

    public static void AssertShape(long[] expected, Tensor t) => Assert.Equal(expected, t.Shape);

    /// <summary>Deterministic pseudo-random values in [-1, 1), reproducible across runs.</summary>
    public static double[] RandomValues(int count, int seed)
    {
        var random = new Random(seed);
        var v = new double[count];
        for (var i = 0; i < count; i++) v[i] = random.NextDouble() * 2 - 1;
        return v;
    }

    public static Tensor Random64(long[] shape, int seed)
    {
        var n = (int)shape.Aggregate(1L, (a, b) => a * b);
        return torch.FromArray<double>(RandomValues(n, seed), shape, DType.Float64);
    }

    /// <summary>C = A·B for row-major A [n, k] and B [k, m].</summary>
    public static double[] MatMul(double[] a, double[] b, int n, int k, int m, int aOffset = 0, int bOffset = 0)
    {
        var c = new double[n * m];
        for (var i = 0; i < n; i++)
            for (var j = 0; j < m; j++)
            {
                double s = 0;
                for (var p = 0; p < k; p++) s += a[aOffset + i * k + p] * b[bOffset + p * m + j];
                c[i * m + j] = s;
            }
        return c;
    }

    public static double Sigmoid(double x) => 1 / (1 + Math.Exp(-x));

    /// <summary>
    /// erf by its Maclaurin series; for |x| ≤ 3 the largest term is ~170, so cancellation costs
    /// under 3 of double's 16 digits, plenty for references checked at 1e-6.
    /// </summary>
    public static double Erf(double x)
    {
        if (Math.Abs(x) > 3) throw new ArgumentOutOfRangeException(nameof(x), "the series is only used for |x| <= 3");
        double sum = 0, term = x;
        for (var n = 0; n < 100; n++)
        {
            // term = (-1)^n x^(2n+1) / n!
            sum += term / (2 * n + 1);
            term *= -x * x / (n + 1);
        }
        return 2 / Math.Sqrt(Math.PI) * sum;
    }
}
