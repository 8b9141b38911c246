using SdAppliance.Torch.Nn;

namespace SdAppliance.Torch.Tests;

[Collection(DefaultGeneratorCollection.Name)]
public class NnLayerTests
{
    private static void Load(Module m, params (string Key, Tensor Value)[] entries)
    {
        using var sd = new StateDict();
        foreach (var (k, v) in entries) sd.Add(k, v);
        m.LoadStateDict(sd);
    }

    private static void AssertClose(double[] expected, float[] actual, double tolerance)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (var i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tolerance, $"element {i}: expected {expected[i]}, got {actual[i]}");
    }

    // ---- initialisation ----

    [Fact]
    public void LinearInitialisesExactlyLikePyTorchForTheSameSeed()
    {
        // torch.manual_seed(0); nn.Linear(3, 2)
        torch.ManualSeed(0);
        using var m = new Linear(3, 2);
        var w = m.Weight.ToArray<float>();
        float[] expected = [-0.0043f, 0.3097f, -0.4752f, -0.4249f, -0.2224f, 0.1548f];
        for (var i = 0; i < 6; i++) Assert.Equal(expected[i], w[i], 4);
        var b = m.Bias!.ToArray<float>();
        Assert.Equal(-0.0114f, b[0], 4);
        Assert.Equal(0.4578f, b[1], 4);

        // An explicit generator draws the same numbers as the seeded default one.
        using var g = new Generator(0);
        using var m2 = new Linear(3, 2, generator: g);
        Assert.Equal(w, m2.Weight.ToArray<float>());
        Assert.Equal(b, m2.Bias!.ToArray<float>());
    }

    [Fact]
    public void Conv2dDrawsWeightThenBiasFromUniformOfOneOverSqrtFanIn()
    {
        // groups=2: each filter sees 4/2 channels x 3x3, so fan_in = 18 and the bound is 1/sqrt(18).
        using var m = new Conv2d(4, 6, 3, groups: 2, generator: new Generator(9));
        using var g = new Generator(9);
        using var uw = torch.Rand([6, 2, 3, 3], g);
        using var ub = torch.Rand([6], g);
        var bound = 1 / Math.Sqrt(18);
        // uniform_(-b, b) is u*(2b) - b on the same draws u, in float: ~1 ulp of 0.24.
        AssertClose(uw.ToArray<float>().Select(u => u * 2 * bound - bound).ToArray(), m.Weight.ToArray<float>(), 1e-6);
        AssertClose(ub.ToArray<float>().Select(u => u * 2 * bound - bound).ToArray(), m.Bias!.ToArray<float>(), 1e-6);
        Assert.Equal([6L, 2, 3, 3], m.Weight.Shape);
    }

    [Fact]
    public void EmbeddingIsStandardNormalAndNormsStartAtOnesAndZeros()
    {
        using var e = new Embedding(5, 3, generator: new Generator(4));
        using var n = torch.Randn([5, 3], new Generator(4));
        Assert.Equal(n.ToArray<float>(), e.Weight.ToArray<float>());

        using var gn = new GroupNorm(2, 4);
        Assert.Equal([1f, 1f, 1f, 1f], gn.Weight!.ToArray<float>());
        Assert.Equal([0f, 0f, 0f, 0f], gn.Bias!.ToArray<float>());
        using var ln = new LayerNorm(3, bias: false);
        Assert.Equal([1f, 1f, 1f], ln.Weight!.ToArray<float>());
        Assert.Null(ln.Bias);
        using var sd = ln.StateDict();
        Assert.Equal(["weight"], sd.Keys);
        using var plain = new GroupNorm(2, 4, affine: false);
        Assert.Empty(plain.Parameters());
        Assert.Throws<ArgumentException>(() => new GroupNorm(3, 4));
    }

    [Fact]
    public void ConstructorsHonourDtype()
    {
        using var m = new Sequential(new Linear(2, 3, dtype: DType.Float64), new LayerNorm(3, dtype: DType.Float64));
        Assert.All(m.Parameters(), p => Assert.Equal(DType.Float64, p.DType));
        using var x = torch.Ones([1, 2], DType.Float64);
        using var y = m.Forward(x);
        Assert.Equal(DType.Float64, y.DType);
    }

    // ---- forward against hand computation ----

    [Fact]
    public void LinearComputesXWTransposedPlusB()
    {
        using var m = new Linear(3, 2);
        Load(m, ("weight", torch.Tensor([1f, 2, 3, -1, 0, 0.5f], 2, 3)), ("bias", torch.Tensor([0.5f, -0.5f], 2)));
        using var x = torch.Tensor([1f, 1, 1, 2, 0, -1], 2, 3);
        using var y = m.Forward(x);
        // [1,1,1]·[1,2,3]+0.5 = 6.5; [1,1,1]·[-1,0,.5]-.5 = -1; [2,0,-1]·[1,2,3]+.5 = -.5; [2,0,-1]·[-1,0,.5]-.5 = -3 (all exact in float).
        Assert.Equal([6.5f, -1f, -0.5f, -3f], y.ToArray<float>());
        Assert.Equal([2L, 2], y.Shape);
    }

    [Fact]
    public void Conv2dMatchesDirectSummationWithStridePaddingDilationAndGroups()
    {
        const int n = 2, cin = 4, cout = 6, h = 5, w = 6, groups = 2, kh = 3, kw = 2;
        (int H, int W) stride = (2, 1), pad = (1, 2), dil = (1, 2);
        using var m = new Conv2d(cin, cout, (kh, kw), stride: (stride.H, stride.W), padding: (pad.H, pad.W), dilation: (dil.H, dil.W), groups: groups, generator: new Generator(1));
        using var x = torch.Randn([n, cin, h, w], new Generator(2));
        using var y = m.Forward(x);

        var xv = x.ToArray<float>();
        var wv = m.Weight.ToArray<float>();
        var bv = m.Bias!.ToArray<float>();
        var ho = (h + 2 * pad.H - dil.H * (kh - 1) - 1) / stride.H + 1;
        var wo = (w + 2 * pad.W - dil.W * (kw - 1) - 1) / stride.W + 1;
        Assert.Equal([n, cout, (long)ho, wo], y.Shape);
        const int cinPerGroup = cin / groups, coutPerGroup = cout / groups;
        var expected = new double[n * cout * ho * wo];
        for (var b = 0; b < n; b++)
            for (var o = 0; o < cout; o++)
                for (var i = 0; i < ho; i++)
                    for (var j = 0; j < wo; j++)
                    {
                        double s = bv[o];
                        for (var c = 0; c < cinPerGroup; c++)
                            for (var p = 0; p < kh; p++)
                                for (var q = 0; q < kw; q++)
                                {
                                    var yi = i * stride.H - pad.H + p * dil.H;
                                    var xj = j * stride.W - pad.W + q * dil.W;
                                    if (yi < 0 || yi >= h || xj < 0 || xj >= w) continue;
                                    var ci = o / coutPerGroup * cinPerGroup + c;
                                    s += (double)wv[((o * cinPerGroup + c) * kh + p) * kw + q] * xv[((b * cin + ci) * h + yi) * w + xj];
                                }
                        expected[((b * cout + o) * ho + i) * wo + j] = s;
                    }
        // Sums of at most 12 products of O(1) float32 values: rounding stays well under 1e-5.
        AssertClose(expected, y.ToArray<float>(), 1e-5);
    }

    [Fact]
    public void GroupNormNormalisesEachGroupThenAppliesPerChannelAffine()
    {
        const int n = 2, c = 6, hw = 4, groups = 3;
        using var m = new GroupNorm(groups, c, eps: 1e-3);
        float[] gamma = [1, -2, 0.5f, 3, 1, 0.25f], beta = [0, 1, -1, 0.5f, 2, -0.5f];
        Load(m, ("weight", torch.Tensor(gamma, c)), ("bias", torch.Tensor(beta, c)));
        using var r = torch.Randn([n, c, 2, 2], new Generator(3));
        using var r3 = r * 3;
        using var x = r3 + 1;
        using var y = m.Forward(x);

        var xv = x.ToArray<float>();
        var expected = new double[xv.Length];
        const int perGroup = c / groups * hw;
        for (var b = 0; b < n; b++)
            for (var g = 0; g < groups; g++)
            {
                var start = (b * c + g * (c / groups)) * hw;
                var seg = xv.Skip(start).Take(perGroup).Select(v => (double)v).ToArray();
                var mean = seg.Average();
                var variance = seg.Select(v => (v - mean) * (v - mean)).Average();
                for (var k = 0; k < perGroup; k++)
                {
                    var ch = g * (c / groups) + k / hw;
                    expected[start + k] = (seg[k] - mean) / Math.Sqrt(variance + 1e-3) * gamma[ch] + beta[ch];
                }
            }
        // Normalised values are O(1) and scaled by at most 3: float32 statistics over 8 values err by ~1e-6.
        AssertClose(expected, y.ToArray<float>(), 1e-5);
    }

    [Fact]
    public void LayerNormNormalisesOverTheTrailingShape()
    {
        using var m = new LayerNorm([2, 3], eps: 1e-5);
        float[] gamma = [1, 2, 3, -1, 0.5f, 1], beta = [0, 0.1f, 0.2f, 0.3f, 0.4f, 0.5f];
        Load(m, ("weight", torch.Tensor(gamma, 2, 3)), ("bias", torch.Tensor(beta, 2, 3)));
        using var x = torch.Randn([4, 2, 3], new Generator(5));
        using var y = m.Forward(x);

        var xv = x.ToArray<float>();
        var expected = new double[xv.Length];
        for (var r = 0; r < 4; r++)
        {
            var seg = xv.Skip(r * 6).Take(6).Select(v => (double)v).ToArray();
            var mean = seg.Average();
            var variance = seg.Select(v => (v - mean) * (v - mean)).Average();
            for (var k = 0; k < 6; k++) expected[r * 6 + k] = (seg[k] - mean) / Math.Sqrt(variance + 1e-5) * gamma[k] + beta[k];
        }
        // As for GroupNorm: O(1) results from float32 statistics over 6 values.
        AssertClose(expected, y.ToArray<float>(), 1e-5);
    }

    [Fact]
    public void EmbeddingPicksRows()
    {
        using var m = new Embedding(3, 2);
        Load(m, ("weight", torch.Tensor([10f, 11, 20, 21, 30, 31], 3, 2)));
        using var idx = torch.Tensor([0L, 2, 1, 0], 2, 2);
        using var y = m.Forward(idx);
        Assert.Equal([2L, 2, 2], y.Shape);
        Assert.Equal([10f, 11, 30, 31, 20, 21, 10, 11], y.ToArray<float>());
    }

    [Fact]
    public void SequentialChainsAndIdentityPassesThrough()
    {
        using var lin = new Linear(3, 2, generator: new Generator(6));
        var seq = new Sequential(new Identity(), lin, new Identity());
        Assert.Equal(3, seq.Count);
        Assert.Same(lin, seq[1]);
        Assert.Same(lin, seq[-2]);
        using var x = torch.Randn([4, 3], new Generator(7));
        using var direct = lin.Forward(x);
        using var chained = seq.Forward(x);
        Assert.Equal(direct.ToArray<float>(), chained.ToArray<float>());
        Assert.False(x.IsDisposed);

        using var empty = new Sequential();
        using var same = empty.Forward(x);
        Assert.NotSame(x, same);
        Assert.True(same.IsSameAs(x));
    }

    [Fact]
    public void ModuleListIndexesAndReplacesInPlace()
    {
        using var list = new ModuleList(new Linear(1, 1), new Dropout());
        list.Append(new Identity());
        Assert.Equal(3, list.Count);
        Assert.IsType<Identity>(list[-1]);
        var replacement = new Linear(1, 1);
        var old = list[1];
        list[1] = replacement;
        old.Dispose();
        Assert.Equal(["0", "1", "2"], list.NamedChildren().Select(c => c.Name));
        Assert.Same(replacement, list[1]);
        Assert.Equal(["0.weight", "0.bias", "1.weight", "1.bias"], list.NamedParameters().Select(p => p.Name));
        Assert.Throws<ArgumentOutOfRangeException>(() => list[3]);
    }
}

public class LayerWrapperTests
{
    private sealed class AddBranch(Tensor scale) : ILayerWrapper
    {
        public Tensor Forward(Tensor input, Func<Tensor, Tensor> layer)
        {
            using var y = layer(input);
            return y + input.Sum(-1, keepdim: true) * scale;
        }
    }

    [Fact]
    public void AWrapperWrapsTheLayerWithoutChangingItsStateDict()
    {
        using var linear = new Nn.Linear(3, 2, generator: new Generator(0)).Freeze();
        using var x = torch.Tensor([1f, 2f, 3f], 1, 3);
        using var plain = linear.Forward(x);
        using var scale = torch.Scalar(0.5).RequiresGrad_();
        linear.Wrapper = new AddBranch(scale);
        using var adapted = linear.Forward(x);
        // 0.5 × (1 + 2 + 3) added to each output.
        Assert.Equal(plain.ToArray<float>().Select(v => v + 3f), adapted.ToArray<float>());
        using (var state = linear.StateDict()) Assert.Equal(["weight", "bias"], state.Keys);
        using (var loss = adapted.Sum()) loss.Backward();
        using var grad = scale.Grad!;
        Assert.Equal(12f, grad.Item(), 5);  // d/dscale of 2 outputs × 6
        Assert.Null(linear.Weight.Grad);
        linear.Wrapper = null;
        using var again = linear.Forward(x);
        Assert.Equal(plain.ToArray<float>(), again.ToArray<float>());
    }
}
