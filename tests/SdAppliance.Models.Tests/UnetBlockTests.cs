using SdAppliance.Models.Blocks;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using static SdAppliance.Models.Tests.UnetVaeFixtures;

namespace SdAppliance.Models.Tests;


/// <summary>The building blocks against the formulas they implement, computed in double precision here.</summary>
public sealed class UnetBlockTests
{
    /// <summary>Float32 results of a few dozen multiply-adds on O(1) values: ~1e-6 relative leaves room for ~10 ulps.</summary>
    private const double Float32Tol = 2e-6;

    [Theory]
    [InlineData(32, true, 0.0)]
    [InlineData(32, false, 1.0)]
    [InlineData(7, true, 1.0)]
    public void TimestepsAreDiffusersSinusoids(int channels, bool flip, double shift)
    {
        var timesteps = new long[] { 0, 1, 500, 999 };
        using var t = torch.Tensor(timesteps);
        using var features = new Timesteps(channels, flip, shift).Forward(t);
        Assert.Equal(DType.Float32, features.DType);
        Assert.Equal([4L, channels], features.Shape);
        var half = channels / 2;
        var expected = new List<double>();
        foreach (var step in timesteps)
        {
            var angles = Enumerable.Range(0, half).Select(i => step * Math.Exp(-Math.Log(10000) * i / (half - shift))).ToArray();
            var sin = angles.Select(Math.Sin);
            var cos = angles.Select(Math.Cos);
            expected.AddRange(flip ? cos.Concat(sin) : sin.Concat(cos));
            if (channels % 2 == 1) expected.Add(0);
        }
        // Angles up to 999 rad are rounded to float32 first (ulp ≈ 6e-5 there), so sin/cos can differ by that much.
        AssertValues(expected, features, 1e-4);
    }

    [Fact]
    public void AttentionIsSoftmaxOfScaledProductsPerHead()
    {
        using var generator = new Generator(21);
        var options = new ModuleOptions(Generator: generator);
        using var attention = new Attention(queryDim: 6, crossAttentionDim: 5, heads: 2, dimHead: 3, options: options);
        using var x = torch.Randn([2, 4, 6], generator);
        using var context = torch.Randn([2, 3, 5], generator);
        using var output = attention.Forward(x, context);
        Assert.Equal([2L, 4, 6], output.Shape);

        var sd = attention.StateDict();
        using (sd)
        {
            Assert.Equal(["to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight", "to_out.0.bias"], sd.Keys);
            var q = Project(Values(x), 2 * 4, 6, Values(sd["to_q.weight"]), null, 6);
            var k = Project(Values(context), 2 * 3, 5, Values(sd["to_k.weight"]), null, 6);
            var v = Project(Values(context), 2 * 3, 5, Values(sd["to_v.weight"]), null, 6);
            var attended = new double[2 * 4 * 6];
            for (var b = 0; b < 2; b++)
                for (var h = 0; h < 2; h++)
                    for (var i = 0; i < 4; i++)
                    {
                        var scores = new double[3];
                        for (var j = 0; j < 3; j++)
                            for (var d = 0; d < 3; d++)
                                scores[j] += q[(b * 4 + i) * 6 + h * 3 + d] * k[(b * 3 + j) * 6 + h * 3 + d] / Math.Sqrt(3);
                        var max = scores.Max();
                        var exp = scores.Select(s => Math.Exp(s - max)).ToArray();
                        var sum = exp.Sum();
                        for (var d = 0; d < 3; d++)
                            attended[(b * 4 + i) * 6 + h * 3 + d] = Enumerable.Range(0, 3).Sum(j => exp[j] / sum * v[(b * 3 + j) * 6 + h * 3 + d]);
                    }
            var expected = Project(attended, 2 * 4, 6, Values(sd["to_out.0.weight"]), Values(sd["to_out.0.bias"]), 6);
            AssertValues(expected, output, Float32Tol);
        }
    }

    [Fact]
    public void VaeAttentionNormalisesAttendsOverPixelsAndAddsItsInput()
    {
        using var generator = new Generator(22);
        var options = new ModuleOptions(Generator: generator);
        using var attention = new Attention(8, heads: 1, dimHead: 8, bias: true, upcastSoftmax: true, normNumGroups: 2, eps: 1e-6,
            residualConnection: true, options: options);
        using (var sd = attention.StateDict())
            Assert.Equal("group_norm.weight", sd.Keys.First());
        using var image = torch.Randn([1, 8, 3, 2], generator);
        using var output = attention.Forward(image);

        // The same attention applied by hand to the [B, H·W, C] tokens of the normalised image.
        using var normed = Functional.GroupNorm(image, 2, attention.GetParameter("group_norm.weight"), attention.GetParameter("group_norm.bias"), 1e-6);
        using var flat = normed.Flatten(2);
        using var tokens = flat.Transpose(1, 2);
        using var plain = new Attention(8, heads: 1, dimHead: 8, bias: true);
        using (var sd = attention.StateDict())
            plain.LoadStateDict(sd.Where(kv => !kv.Key.StartsWith("group_norm", StringComparison.Ordinal)).ToDictionary());
        using var attended = plain.Forward(tokens);
        using var back = attended.Transpose(1, 2);
        using var asImage = back.Reshape(1, 8, 3, 2);
        using var expected = asImage + image;
        AssertClose(expected, output, 1e-6, 1e-6, "VAE attention");
    }

    [Fact]
    public void UpcastAttentionKeepsLowPrecisionOutputsCloseToFloat32()
    {
        using var generator = new Generator(23);
        using var attention = new Attention(16, heads: 2, dimHead: 8, upcastAttention: true, options: new ModuleOptions(Generator: generator));
        using var x = torch.Randn([1, 5, 16], generator);
        using var reference = attention.Forward(x);
        attention.To(DType.BFloat16);
        using var xLow = x.To(DType.BFloat16);
        using var low = attention.Forward(xLow);
        Assert.Equal(DType.BFloat16, low.DType);
        // bfloat16 keeps 8 significant bits (relative step 2^-8 ≈ 4e-3); the weights, the input and
        // four roundings of intermediates each contribute, so a few steps on O(1) outputs.
        AssertClose(reference, low, 3e-2, 3e-2, "bfloat16 upcast attention");
    }

    [Fact]
    public void CheckpointedCallsRunAgainInBackwardOnly()
    {
        var calls = 0;
        using var weight = torch.Tensor(new float[] { 2f }).RequiresGrad_();
        Tensor Layer(Tensor x, Tensor? extra)
        {
            calls++;
            using var scaled = x * weight;
            return scaled + extra!;
        }
        using var x = torch.Tensor(new float[] { 1f, 2f }).RequiresGrad_();
        using var extra = torch.Tensor(new float[] { 3f, 4f }).RequiresGrad_();
        using (var y = Checkpointing.Call(true, Layer, x, extra))
        using (var loss = y.Sum())
        {
            Assert.Equal(1, calls);
            loss.Backward();
        }
        Assert.Equal(2, calls);
        using (var gx = x.Grad) Assert.Equal([2f, 2f], gx!.ToArray<float>());
        using (var ge = extra.Grad) Assert.Equal([1f, 1f], ge!.ToArray<float>());
        using (var gw = weight.Grad) Assert.Equal([3f], gw!.ToArray<float>());

        using (Autograd.NoGrad())
        using (Checkpointing.Call(true, Layer, x, extra)) { }
        Assert.Equal(3, calls);
    }

    [Fact]
    public void ResnetShortcutExistsOnlyWhenChannelsChange()
    {
        using (Init.Skip())
        {
            using var same = new ResnetBlock2D(32, 32, 128, groups: 8);
            using var wider = new ResnetBlock2D(32, 64, null, groups: 8);
            using var sameKeys = same.StateDict();
            using var widerKeys = wider.StateDict();
            Assert.Equal(["norm1.weight", "norm1.bias", "conv1.weight", "conv1.bias", "time_emb_proj.weight", "time_emb_proj.bias",
                "norm2.weight", "norm2.bias", "conv2.weight", "conv2.bias"], sameKeys.Keys);
            Assert.Equal([64L, 32, 1, 1], widerKeys["conv_shortcut.weight"].Shape);
            Assert.DoesNotContain("time_emb_proj.weight", widerKeys.Keys);
        }
    }

    [Fact]
    public void SamplersHalveAndDoubleTheResolution()
    {
        using var generator = new Generator(24);
        var options = new ModuleOptions(Generator: generator);
        using var x = torch.Randn([1, 4, 7, 8], generator);
        using var unetDown = new Downsample2D(4, padding: 1, options: options);
        using var vaeDown = new Downsample2D(4, padding: 0, options: options);
        using (var a = unetDown.Forward(x)) Assert.Equal([1L, 4, 4, 4], a.Shape);
        // Padding only right/bottom then a padding-0 stride-2 conv: floor((7 + 1 − 3) / 2) + 1 = 3.
        using (var b = vaeDown.Forward(x)) Assert.Equal([1L, 4, 3, 4], b.Shape);

        using var up = new Upsample2D(4, options: options);
        using (var c = up.Forward(x)) Assert.Equal([1L, 4, 14, 16], c.Shape);
        using (var d = up.Forward(x, [13, 16])) Assert.Equal([1L, 4, 13, 16], d.Shape);
    }

    /// <summary>x [n, in] · Wᵀ [in, out] (+ b) in double.</summary>
    private static double[] Project(double[] x, int n, int inDim, double[] w, double[]? b, int outDim)
    {
        var y = new double[n * outDim];
        for (var r = 0; r < n; r++)
            for (var o = 0; o < outDim; o++)
            {
                var s = b?[o] ?? 0;
                for (var i = 0; i < inDim; i++) s += x[r * inDim + i] * w[o * inDim + i];
                y[r * outDim + o] = s;
            }
        return y;
    }

    private static void AssertValues(IReadOnlyList<double> expected, Tensor actual, double tol)
    {
        var a = Values(actual);
        Assert.Equal(expected.Count, a.Length);
        for (var i = 0; i < a.Length; i++)
            if (Math.Abs(expected[i] - a[i]) > tol * Math.Max(1, Math.Abs(expected[i])))
                Assert.Fail($"element {i}: expected {expected[i]:R}, got {a[i]:R}");
    }
}
