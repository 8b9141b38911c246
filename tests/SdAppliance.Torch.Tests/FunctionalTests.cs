using static SdAppliance.Torch.Tests.TestSupport;

namespace SdAppliance.Torch.Tests;

/// <summary>Forward values and errors of the torch.nn.functional additions.</summary>
public class FunctionalTests
{
    private static readonly float[] Xs = [-3f, -1.5f, -0.25f, 0f, 0.5f, 2f, 3f];

    // ---- activations ----
    [Fact]
    public void SiluGeluQuickGeluMish()
    {
        // float64: in float32, GELU's 1 + erf(x) cancels for x < -2 (1.7e-7 absolute at x = -3),
        // which would hide a real error behind a loose tolerance.
        using var x = torch.Tensor(Xs.Select(v => (double)v).ToArray());
        using var silu = Functional.Silu(x);
        using var gelu = Functional.Gelu(x);
        using var geluTanh = Functional.Gelu(x, "tanh");
        using var quick = Functional.QuickGelu(x);
        using var mish = Functional.Mish(x);
        using var relu = Functional.Relu(x);
        using var sigmoid = Functional.Sigmoid(x);
        const double tol = Float64Tol;
        AssertClose(Xs.Select(v => v * Sigmoid(v)).ToArray(), silu, tol, tol);
        AssertClose(Xs.Select(v => 0.5 * v * (1 + Erf(v / Math.Sqrt(2)))).ToArray(), gelu, tol, tol);
        AssertClose(Xs.Select(v => 0.5 * v * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v)))).ToArray(), geluTanh, tol, tol);
        AssertClose(Xs.Select(v => v * Sigmoid(1.702 * v)).ToArray(), quick, tol, tol);
        AssertClose(Xs.Select(v => v * Math.Tanh(Math.Log(1 + Math.Exp(v)))).ToArray(), mish, tol, tol);
        Assert.Equal(Xs.Select(v => Math.Max(v, 0.0)).ToArray(), relu.ToArray<double>());
        AssertClose(Xs.Select(v => Sigmoid(v)).ToArray(), sigmoid, tol, tol);

        // The two GELUs differ by up to ~5e-4 near |x| = 2: make sure the mode reached libtorch.
        Assert.False(gelu.Allclose(geluTanh, rtol: 0, atol: 1e-5));
    }

    [Fact]
    public void GeluRejectsUnknownApproximation()
    {
        using var x = torch.Tensor(Xs);
        var e = Assert.Throws<TorchException>(() => Functional.Gelu(x, "fast"));
        Assert.Contains("approximate argument must be either none or tanh", e.Message);
    }

    [Fact]
    public void SoftmaxAndLogSoftmaxAgree()
    {
        using var x = torch.Tensor([0.5, -1, 2, 0, 3, 1], 2, 3);
        using var s = Functional.Softmax(x, -1);
        using var ls = Functional.LogSoftmax(x, -1);
        using var exp = ls.Exp();
        AssertClose(Values(s), exp, Float64Tol, 0);
        using var rowSums = s.Sum(1);
        AssertClose([1, 1], rowSums, Float64Tol, 0);
    }

    // ---- convolution ----
    [Fact]
    public void ConvTranspose2dSpreadsEachInputOverTheKernel()
    {
        using var x = torch.Tensor([1f, 2, 3, 4], 1, 1, 2, 2);
        using var w = torch.Ones([1, 1, 2, 2]);
        using var y = Functional.ConvTranspose2d(x, w);
        Assert.Equal([1L, 1, 3, 3], y.Shape);
        Assert.Equal([1f, 3, 2, 4, 10, 6, 3, 7, 4], y.ToArray<float>());

        using var bias = torch.Tensor([0.5f]);
        using var y2 = Functional.ConvTranspose2d(x, w, bias, stride: 2);
        Assert.Equal([1L, 1, 4, 4], y2.Shape);
        Assert.Equal([1.5f, 1.5f, 2.5f, 2.5f, 1.5f, 1.5f, 2.5f, 2.5f, 3.5f, 3.5f, 4.5f, 4.5f, 3.5f, 3.5f, 4.5f, 4.5f], y2.ToArray<float>());

        using var y3 = Functional.ConvTranspose2d(x, w, stride: 2, padding: 1, outputPadding: 1);
        Assert.Equal([1L, 1, 3, 3], y3.Shape);
    }

    // ---- attention ----
    /// <summary>softmax(q kᵀ·scale + bias) v in double loops; bias −∞ masks a position.</summary>
    private static double[] AttentionReference(double[] q, double[] k, double[] v, int batch, int l, int s, int e, int ev,
        Func<int, int, int, double> bias, double scale)
    {
        var o = new double[batch * l * ev];
        for (var b = 0; b < batch; b++)
            for (var i = 0; i < l; i++)
            {
                var scores = new double[s];
                var max = double.NegativeInfinity;
                for (var j = 0; j < s; j++)
                {
                    double dot = 0;
                    for (var c = 0; c < e; c++) dot += q[(b * l + i) * e + c] * k[(b * s + j) * e + c];
                    scores[j] = dot * scale + bias(b, i, j);
                    max = Math.Max(max, scores[j]);
                }
                var z = 0.0;
                for (var j = 0; j < s; j++) z += scores[j] = Math.Exp(scores[j] - max);
                for (var c = 0; c < ev; c++)
                {
                    double acc = 0;
                    for (var j = 0; j < s; j++) acc += scores[j] / z * v[(b * s + j) * ev + c];
                    o[(b * l + i) * ev + c] = acc;
                }
            }
        return o;
    }

    // batch 2, heads 2 (flattened into 4 reference batches), 3 queries, 5 keys, head dim 4, value dim 3
    private const int B = 2, H = 2, L = 3, S = 5, E = 4, Ev = 3;

    private static (Tensor Q, Tensor K, Tensor V) Qkv(DType dtype = DType.Float64)
    {
        using var q = Random64([B, H, L, E], 1);
        using var k = Random64([B, H, S, E], 2);
        using var v = Random64([B, H, S, Ev], 3);
        return (q.To(dtype), k.To(dtype), v.To(dtype));
    }

    [Fact]
    public void AttentionWithoutMask()
    {
        var (q, k, v) = Qkv();
        using (q) using (k) using (v)
        {
            using var o = Functional.ScaledDotProductAttention(q, k, v);
            Assert.Equal([(long)B, H, L, Ev], o.Shape);
            var expected = AttentionReference(Values(q), Values(k), Values(v), B * H, L, S, E, Ev, (_, _, _) => 0, 1 / Math.Sqrt(E));
            AssertClose(expected, o, Float64Tol, Float64Tol);

            using var o2 = Functional.ScaledDotProductAttention(q, k, v, scale: 0.3);
            var expected2 = AttentionReference(Values(q), Values(k), Values(v), B * H, L, S, E, Ev, (_, _, _) => 0, 0.3);
            AssertClose(expected2, o2, Float64Tol, Float64Tol);
        }
    }

    [Fact]
    public void AttentionWithBoolMaskKeepsTrue()
    {
        var (q, k, v) = Qkv();
        using (q) using (k) using (v)
        {
            // [L, S] broadcast over batch and heads; every query keeps at least one key.
            bool[] keep = [true, false, true, true, false, false, true, false, false, true, true, true, true, true, false];
            using var mask = torch.Tensor(keep, L, S);
            using var o = Functional.ScaledDotProductAttention(q, k, v, mask);
            var expected = AttentionReference(Values(q), Values(k), Values(v), B * H, L, S, E, Ev,
                (_, i, j) => keep[i * S + j] ? 0 : double.NegativeInfinity, 1 / Math.Sqrt(E));
            AssertClose(expected, o, Float64Tol, Float64Tol);
        }
    }

    [Fact]
    public void AttentionWithFloatMaskAddsIt()
    {
        var (q, k, v) = Qkv();
        using (q) using (k) using (v)
        {
            // [B, 1, L, S]: a different additive bias per batch item, shared by the heads.
            var bias = RandomValues(B * L * S, 4).Select(x => 3 * x).ToArray();
            using var mask = torch.Tensor(bias, B, 1, L, S);
            using var o = Functional.ScaledDotProductAttention(q, k, v, mask);
            var expected = AttentionReference(Values(q), Values(k), Values(v), B * H, L, S, E, Ev,
                (bh, i, j) => bias[(bh / H * L + i) * S + j], 1 / Math.Sqrt(E));
            AssertClose(expected, o, Float64Tol, Float64Tol);
        }
    }

    [Fact]
    public void CausalAttentionSeesOnlyEarlierKeys()
    {
        using var q = Random64([B, H, S, E], 5);
        using var k = Random64([B, H, S, E], 6);
        using var v = Random64([B, H, S, Ev], 7);
        using var o = Functional.ScaledDotProductAttention(q, k, v, isCausal: true);
        var expected = AttentionReference(Values(q), Values(k), Values(v), B * H, S, S, E, Ev,
            (_, i, j) => j <= i ? 0 : double.NegativeInfinity, 1 / Math.Sqrt(E));
        AssertClose(expected, o, Float64Tol, Float64Tol);
    }

    [Fact]
    public void AttentionMatchesExplicitOpsInFloat32()
    {
        var (q, k, v) = Qkv(DType.Float32);
        using (q) using (k) using (v)
        using (torch.NewDisposeScope())
        {
            var mask = torch.Tensor([true, true, false, true, false, true, true, true, true, false, false, true, true, true, true], L, S);
            var o = Functional.ScaledDotProductAttention(q, k, v, mask);
            var scores = q.Matmul(k.Transpose(-2, -1)).Mul(1 / Math.Sqrt(E)).MaskedFill(mask.LogicalNot(), double.NegativeInfinity);
            var explicitO = scores.Softmax(-1).Matmul(v);
            // Both run float32 matmul/softmax on O(1) values; a few ulps of difference at most.
            Assert.True(o.Allclose(explicitO, rtol: 1e-5, atol: 1e-6));
        }
    }

    [Fact]
    public void AttentionArgumentErrors()
    {
        var (q, k, v) = Qkv();
        using (q) using (k) using (v)
        {
            using var mask = torch.Ones([L, S], DType.Bool);
            Assert.Throws<ArgumentException>(() => Functional.ScaledDotProductAttention(q, k, v, mask, isCausal: true));
            Assert.Throws<ArgumentOutOfRangeException>(() => Functional.ScaledDotProductAttention(q, k, v, scale: 0));
            using var wrongE = torch.Zeros([B, H, S, E + 1], DType.Float64);
            Assert.Throws<TorchException>(() => Functional.ScaledDotProductAttention(q, wrongE, v));
        }
    }

    // ---- interpolate ----
    // Separable references: a 1-D resampling matrix W [out, in] per axis, result = Wh · X · Wwᵀ.
    private static double[,] LinearWeights(int n, int m, bool alignCorners)
    {
        var w = new double[m, n];
        for (var o = 0; o < m; o++)
        {
            var src = alignCorners ? (m > 1 ? o * (n - 1.0) / (m - 1) : 0) : Math.Max((o + 0.5) * n / m - 0.5, 0);
            var i0 = (int)Math.Floor(src);
            var i1 = Math.Min(i0 + 1, n - 1);
            var t = src - i0;
            w[o, i0] += 1 - t;
            w[o, i1] += t;
        }
        return w;
    }

    private static double Cubic(double x, double a)
    {
        x = Math.Abs(x);
        if (x <= 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
        if (x < 2) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
        return 0;
    }

    private static double[,] CubicWeights(int n, int m, bool alignCorners)
    {
        const double a = -0.75; // PyTorch's bicubic (not the -0.5 of PIL and of antialias)
        var w = new double[m, n];
        for (var o = 0; o < m; o++)
        {
            var src = alignCorners ? (m > 1 ? o * (n - 1.0) / (m - 1) : 0) : (o + 0.5) * n / m - 0.5;
            var i = (int)Math.Floor(src);
            var t = src - i;
            for (var d = -1; d <= 2; d++)
                w[o, Math.Clamp(i + d, 0, n - 1)] += Cubic(t - d, a);
        }
        return w;
    }

    // The antialiased kernels (PIL's algorithm): the filter is stretched by the downscale factor,
    // clipped to the image and normalised.
    private static double[,] AntialiasWeights(int n, int m, bool cubic)
    {
        var w = new double[m, n];
        var scale = (double)n / m;
        var support = (cubic ? 2.0 : 1.0) * Math.Max(scale, 1);
        var invScale = scale >= 1 ? 1 / scale : 1;
        for (var o = 0; o < m; o++)
        {
            var center = scale * (o + 0.5);
            var lo = Math.Max((long)(center - support + 0.5), 0);
            var hi = Math.Min((long)(center + support + 0.5), n);
            double total = 0;
            for (var j = lo; j < hi; j++)
            {
                var x = (j - center + 0.5) * invScale;
                total += w[o, j] = cubic ? Cubic(x, -0.5) : Math.Max(0, 1 - Math.Abs(x));
            }
            for (var j = lo; j < hi; j++) w[o, j] /= total;
        }
        return w;
    }

    private static double[] Resample(double[] x, int h, int wIn, double[,] wh, double[,] ww)
    {
        int oh = wh.GetLength(0), ow = ww.GetLength(0);
        var y = new double[oh * ow];
        for (var i = 0; i < oh; i++)
            for (var j = 0; j < ow; j++)
            {
                double s = 0;
                for (var a = 0; a < h; a++)
                    for (var b = 0; b < wIn; b++)
                        s += wh[i, a] * x[a * wIn + b] * ww[j, b];
                y[i * ow + j] = s;
            }
        return y;
    }

    private static Tensor Image(int h, int w, int seed) => Random64([1, 1, h, w], seed);

    [Fact]
    public void NearestUpsamplingRepeatsPixels()
    {
        using var x = torch.Tensor([1f, 2, 3, 4], 1, 1, 2, 2);
        using var y = Functional.Interpolate(x, size: [4, 4]);
        using var y2 = Functional.Interpolate(x, 2.0);
        Assert.Equal([1L, 1, 4, 4], y.Shape);
        Assert.Equal([1f, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4], y.ToArray<float>());
        Assert.Equal(y.ToArray<float>(), y2.ToArray<float>());
        using var y3 = Functional.Interpolate(x, size: [3]);
        Assert.Equal([1L, 1, 3, 3], y3.Shape);
    }

    [Fact]
    public void NearestWithAScaleFactorUsesTheFactorUnlessRecomputed()
    {
        // Width 5 at scale 0.7 gives 3 columns. PyTorch samples column floor(o / 0.7) = 0, 1, 2;
        // with the scale recomputed from the sizes (5/3) it samples 0, 1, 3.
        using var x = torch.Tensor([10f, 11, 12, 13, 14], 1, 1, 1, 5);
        using var byScale = Functional.Interpolate(x, scaleFactor: [1, 0.7]);
        using var recomputed = Functional.Interpolate(x, scaleFactor: [1, 0.7], recomputeScaleFactor: true);
        using var bySize = Functional.Interpolate(x, size: [1, 3]);
        Assert.Equal([10f, 11, 12], byScale.ToArray<float>());
        Assert.Equal([10f, 11, 13], recomputed.ToArray<float>());
        Assert.Equal([10f, 11, 13], bySize.ToArray<float>());

        using var exact = Functional.Interpolate(x, size: [1, 3], mode: "nearest-exact");
        Assert.Equal([10f, 12, 14], exact.ToArray<float>()); // floor((o + 0.5)·5/3) = 0, 2, 4
    }

    [Theory]
    [InlineData(3, 4, 5, 7, false)]
    [InlineData(3, 4, 5, 7, true)]
    [InlineData(6, 7, 4, 3, false)]
    [InlineData(6, 7, 4, 3, true)]
    public void Bilinear(int h, int w, int oh, int ow, bool alignCorners)
    {
        using var x = Image(h, w, 10);
        using var y = Functional.Interpolate(x, size: [oh, ow], mode: "bilinear", alignCorners: alignCorners);
        Assert.Equal([1L, 1, oh, ow], y.Shape);
        AssertClose(Resample(Values(x), h, w, LinearWeights(h, oh, alignCorners), LinearWeights(w, ow, alignCorners)), y, Float64Tol, Float64Tol);
    }

    [Theory]
    [InlineData(4, 5, 7, 8, false)]
    [InlineData(4, 5, 7, 8, true)]
    [InlineData(7, 6, 4, 3, false)]
    public void Bicubic(int h, int w, int oh, int ow, bool alignCorners)
    {
        using var x = Image(h, w, 11);
        using var y = Functional.Interpolate(x, size: [oh, ow], mode: "bicubic", alignCorners: alignCorners);
        AssertClose(Resample(Values(x), h, w, CubicWeights(h, oh, alignCorners), CubicWeights(w, ow, alignCorners)), y, Float64Tol, Float64Tol);
    }

    [Theory]
    [InlineData(8, 9, 3, 4, "bilinear")]
    [InlineData(8, 9, 3, 4, "bicubic")]
    [InlineData(3, 4, 5, 9, "bilinear")]
    [InlineData(5, 3, 2, 7, "bicubic")]
    public void Antialias(int h, int w, int oh, int ow, string mode)
    {
        var cubic = mode == "bicubic";
        using var x = Image(h, w, 12);
        using var y = Functional.Interpolate(x, size: [oh, ow], mode: mode, antialias: true);
        AssertClose(Resample(Values(x), h, w, AntialiasWeights(h, oh, cubic), AntialiasWeights(w, ow, cubic)), y, Float64Tol, Float64Tol);
    }

    [Fact]
    public void AntialiasChangesDownsampling()
    {
        using var x = Image(8, 8, 13);
        using var plain = Functional.Interpolate(x, size: [2, 2], mode: "bilinear");
        using var aa = Functional.Interpolate(x, size: [2, 2], mode: "bilinear", antialias: true);
        Assert.False(plain.Allclose(aa, rtol: 0, atol: 1e-3));
    }

    [Fact]
    public void AreaAveragesBlocks()
    {
        using var x = torch.Tensor(Enumerable.Range(0, 16).Select(i => (float)i).ToArray(), 1, 1, 4, 4);
        using var y = Functional.Interpolate(x, size: [2, 2], mode: "area");
        using var y2 = Functional.Interpolate(x, 0.5, mode: "area");
        Assert.Equal([2.5f, 4.5f, 10.5f, 12.5f], y.ToArray<float>());
        Assert.Equal(y.ToArray<float>(), y2.ToArray<float>());
    }

    [Fact]
    public void InterpolateArgumentErrors()
    {
        using var x = torch.Zeros([1, 1, 4, 4]);
        Assert.Throws<ArgumentException>(() => Functional.Interpolate(x, size: [2, 2], scaleFactor: [2]));
        Assert.Throws<ArgumentException>(() => Functional.Interpolate(x));
        Assert.Throws<ArgumentException>(() => Functional.Interpolate(x, size: [2, 2, 2]));
        Assert.Throws<ArgumentException>(() => Functional.Interpolate(x, size: [2, 2], recomputeScaleFactor: true));
        Assert.Throws<ArgumentException>(() => Functional.Interpolate(x, 2.0, alignCorners: false));
        Assert.Throws<ArgumentException>(() => Functional.Interpolate(x, 2.0, antialias: true));
        Assert.Throws<ArgumentException>(() => Functional.Interpolate(x, 2.0, mode: "trilinear"));
        using var x3 = torch.Zeros([1, 4, 4]);
        Assert.Throws<ArgumentException>(() => Functional.Interpolate(x3, 2.0));
        using var empty = torch.Zeros([1, 1, 4, 4]);
        var e = Assert.Throws<TorchException>(() => Functional.Interpolate(empty, size: [0, 2], mode: "bilinear"));
        Assert.Contains("should be greater than 0", e.Message);
    }

    // ---- pad ----
    private static Tensor Grid() => torch.Tensor([1f, 2, 3, 4, 5, 6], 1, 1, 2, 3);

    [Fact]
    public void PadConstant()
    {
        using var x = torch.Tensor([1f, 2, 3]);
        using var p = Functional.Pad(x, [1, 2], value: 9);
        Assert.Equal([9f, 1, 2, 3, 9, 9], p.ToArray<float>());

        using var g = Grid();
        using var p2 = Functional.Pad(g, [1, 0, 0, 1]); // left 1, right 0, top 0, bottom 1
        Assert.Equal([1L, 1, 3, 4], p2.Shape);
        Assert.Equal([0f, 1, 2, 3, 0, 4, 5, 6, 0, 0, 0, 0], p2.ToArray<float>());

        using var crop = Functional.Pad(g, [-1, 0]); // negative padding crops
        Assert.Equal([2f, 3, 5, 6], crop.ToArray<float>());
    }

    [Fact]
    public void PadReflectAndReplicate()
    {
        using var g = Grid();
        using var reflect = Functional.Pad(g, [1, 1, 1, 1], "reflect");
        Assert.Equal([1L, 1, 4, 5], reflect.Shape);
        Assert.Equal([5f, 4, 5, 6, 5, 2, 1, 2, 3, 2, 5, 4, 5, 6, 5, 2, 1, 2, 3, 2], reflect.ToArray<float>());

        using var replicate = Functional.Pad(g, [1, 1, 1, 1], "replicate");
        Assert.Equal([1f, 1, 2, 3, 3, 1, 1, 2, 3, 3, 4, 4, 5, 6, 6, 4, 4, 5, 6, 6], replicate.ToArray<float>());

        using var circular = Functional.Pad(g, [1, 1, 0, 0], "circular");
        Assert.Equal([3f, 1, 2, 3, 1, 6, 4, 5, 6, 4], circular.ToArray<float>());

        var e = Assert.Throws<TorchException>(() => Functional.Pad(g, [3, 3, 0, 0], "reflect"));
        Assert.Contains("Padding size should be less than the corresponding input dimension", e.Message);
    }

    // ---- losses ----
    [Fact]
    public void MseLossReductions()
    {
        using var input = torch.Tensor([1f, 2, 3]);
        using var target = torch.Tensor([2f, 2, 5]);
        using var mean = Functional.MseLoss(input, target);
        using var sum = Functional.MseLoss(input, target, "sum");
        using var none = Functional.MseLoss(input, target, "none");
        AssertClose([5 / 3.0], mean);
        Assert.Empty(mean.Shape);
        Assert.Equal(5, sum.Item());
        Assert.Equal([1f, 0, 4], none.ToArray<float>());
        Assert.Throws<ArgumentException>(() => Functional.MseLoss(input, target, "average"));

        using var wrong = torch.Zeros([2]);
        var e = Assert.Throws<TorchException>(() => Functional.MseLoss(input, wrong));
        Assert.Contains("must match the size of tensor b", e.Message);
    }
}
