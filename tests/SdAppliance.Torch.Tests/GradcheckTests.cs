using static SdAppliance.Torch.Tests.TestSupport;

namespace SdAppliance.Torch.Tests;

/// <summary>
/// Autograd gradients of the differentiable operations against finite differences in float64.
/// Inputs are random in [-1, 1) (or [0.5, 1.5) where the op needs positive values); no input sits
/// within the finite-difference step of a kink (relu/abs at 0, clamp bounds, ties of max).
/// </summary>
public class GradcheckTests
{
    private static Tensor R(int seed, params long[] shape) => Random64(shape, seed);

    private static Tensor Positive(int seed, params long[] shape)
    {
        using var r = Random64(shape, seed);
        return r.Mul(0.5).Add(1);
    }

    // ---- matrix products and layers ----
    [Fact]
    public void Matmul() => GradCheck.Check(x => x[0].Matmul(x[1]), R(1, 2, 2, 3), R(2, 3, 2));

    [Fact]
    public void MmAndBmm()
    {
        GradCheck.Check(x => x[0].Mm(x[1]), R(1, 2, 3), R(2, 3, 4));
        GradCheck.Check(x => x[0].Bmm(x[1]), R(3, 2, 2, 3), R(4, 2, 3, 2));
    }

    [Fact]
    public void Baddbmm() => GradCheck.Check(x => x[0].Baddbmm(x[1], x[2], beta: 0.5, alpha: 2), R(1, 2, 2, 2), R(2, 2, 2, 3), R(3, 2, 3, 2));

    [Fact]
    public void Linear() => GradCheck.Check(x => Functional.Linear(x[0], x[1], x[2]), R(1, 2, 3), R(2, 4, 3), R(3, 4));

    [Fact]
    public void Conv2dWithStridePaddingGroups() =>
        GradCheck.Check(x => Functional.Conv2d(x[0], x[1], x[2], stride: 2, padding: 1, groups: 2), R(1, 1, 4, 5, 5), R(2, 4, 2, 3, 3), R(3, 4));

    [Fact]
    public void ConvTranspose2d() =>
        GradCheck.Check(x => Functional.ConvTranspose2d(x[0], x[1], x[2], stride: 2, padding: 1), R(1, 1, 2, 3, 3), R(2, 2, 2, 3, 3), R(3, 2));

    [Fact]
    public void GroupNorm() => GradCheck.Check(x => Functional.GroupNorm(x[0], 2, x[1], x[2]), R(1, 2, 4, 2, 3), R(2, 4), R(3, 4));

    [Fact]
    public void LayerNorm() => GradCheck.Check(x => Functional.LayerNorm(x[0], [4], x[1], x[2]), R(1, 2, 3, 4), R(2, 4), R(3, 4));

    [Fact]
    public void Embedding()
    {
        using var indices = torch.Tensor([2L, 0, 2, 3, 1], 5);
        GradCheck.Check(x => Functional.Embedding(indices, x[0]), R(1, 4, 3));
    }

    // ---- activations ----
    [Fact]
    public void Silu() => GradCheck.Check(x => Functional.Silu(x[0]), R(1, 12));

    [Fact]
    public void GeluExact() => GradCheck.Check(x => Functional.Gelu(x[0]), R(2, 12));

    [Fact]
    public void GeluTanh() => GradCheck.Check(x => Functional.Gelu(x[0], "tanh"), R(3, 12));

    [Fact]
    public void QuickGeluAndMish()
    {
        GradCheck.Check(x => Functional.QuickGelu(x[0]), R(4, 12));
        GradCheck.Check(x => Functional.Mish(x[0]), R(5, 12));
    }

    [Fact]
    public void SigmoidTanhRelu()
    {
        GradCheck.Check(x => x[0].Sigmoid(), R(6, 12));
        GradCheck.Check(x => x[0].Tanh(), R(7, 12));
        GradCheck.Check(x => x[0].Relu(), R(8, 12));
    }

    [Fact]
    public void SoftmaxAndLogSoftmax()
    {
        GradCheck.Check(x => x[0].Softmax(1), R(1, 2, 3, 4));
        GradCheck.Check(x => x[0].LogSoftmax(-1), R(2, 2, 3, 4));
    }

    // ---- attention ----
    [Fact]
    public void Attention() =>
        GradCheck.Check(x => Functional.ScaledDotProductAttention(x[0], x[1], x[2]), R(1, 1, 2, 3, 4), R(2, 1, 2, 5, 4), R(3, 1, 2, 5, 3));

    [Fact]
    public void AttentionWithFloatMaskIsDifferentiableInTheMask() =>
        GradCheck.Check(x => Functional.ScaledDotProductAttention(x[0], x[1], x[2], x[3], scale: 0.7),
            R(1, 1, 2, 3, 4), R(2, 1, 2, 5, 4), R(3, 1, 2, 5, 3), R(4, 1, 1, 3, 5));

    [Fact]
    public void AttentionWithBoolMask()
    {
        using var mask = torch.Tensor([true, false, true, true, false, false, true, true, false, true, true, false, false, true, true], 3, 5);
        GradCheck.Check(x => Functional.ScaledDotProductAttention(x[0], x[1], x[2], mask), R(1, 1, 2, 3, 4), R(2, 1, 2, 5, 4), R(3, 1, 2, 5, 3));
    }

    [Fact]
    public void CausalAttention() =>
        GradCheck.Check(x => Functional.ScaledDotProductAttention(x[0], x[1], x[2], isCausal: true), R(1, 1, 2, 4, 3), R(2, 1, 2, 4, 3), R(3, 1, 2, 4, 3));

    // ---- resampling ----
    [Theory]
    [InlineData("bilinear", false, false, 6, 7)]
    [InlineData("bilinear", true, false, 6, 7)]
    [InlineData("bilinear", false, true, 2, 3)]
    [InlineData("bicubic", false, false, 6, 7)]
    [InlineData("bicubic", false, true, 2, 3)]
    [InlineData("nearest", null, false, 6, 3)]
    [InlineData("area", null, false, 2, 2)]
    public void Interpolate(string mode, bool? alignCorners, bool antialias, int oh, int ow) =>
        GradCheck.Check(x => Functional.Interpolate(x[0], size: [oh, ow], mode: mode, alignCorners: alignCorners, antialias: antialias), R(1, 1, 2, 4, 5));

    [Theory]
    [InlineData("constant")]
    [InlineData("reflect")]
    [InlineData("replicate")]
    public void Pad(string mode) => GradCheck.Check(x => Functional.Pad(x[0], [2, 1, 1, 2], mode), R(1, 1, 2, 3, 4));

    // ---- indexing ----
    [Fact]
    public void GatherIndexSelectScatterAdd()
    {
        using var gi = torch.Tensor([0L, 2, 2, 1, 0, 0], 2, 3);
        GradCheck.Check(x => x[0].Gather(1, gi), R(1, 2, 3));
        using var si = torch.Tensor([1L, 0, 2], 3);
        GradCheck.Check(x => x[0].IndexSelect(1, si), R(2, 2, 3));
        using var scatter = torch.Tensor([0L, 2, 0, 1, 1, 1], 2, 3);
        GradCheck.Check(x => x[0].ScatterAdd(1, scatter, x[1]), R(3, 2, 4), R(4, 2, 3));
    }

    [Fact]
    public void MaskedFillAndWhere()
    {
        using var mask = torch.Tensor([true, false, false, true, false, true], 2, 3);
        GradCheck.Check(x => x[0].MaskedFill(mask, 2), R(1, 2, 3));
        GradCheck.Check(x => torch.Where(mask, x[0], x[1]), R(2, 2, 3), R(3, 2, 3));
    }

    [Fact]
    public void ViewsSplitsAndCopies()
    {
        static Tensor Views(Tensor x)
        {
            var parts = new List<Tensor>
            {
                x.Permute(2, 0, 1).Flatten(),
                x.Transpose(0, 1).Unflatten(0, 3, 1).Flatten(),
                x.Narrow(2, 1, 2).Flatten(),
                x.Unsqueeze(1).Expand(2, 2, 3, 4).Flatten(),
                x.Repeat(1, 2, 1).Flatten(),
                x.Chunk(2, 2)[1].Flatten(),
                x.Split([1, 3], 2)[0].Squeeze(2).Flatten(),
            };
            return torch.Cat(parts);
        }
        GradCheck.Check(x => Views(x[0]), R(1, 2, 3, 4));
    }

    // ---- losses and reductions ----
    [Fact]
    public void MseLoss()
    {
        GradCheck.Check(x => Functional.MseLoss(x[0], x[1]), R(1, 2, 3), R(2, 2, 3));
        GradCheck.Check(x => Functional.MseLoss(x[0], x[1], "sum"), R(3, 2, 3), R(4, 2, 3));
        GradCheck.Check(x => Functional.MseLoss(x[0], x[1], "none"), R(5, 2, 3), R(6, 2, 3));
    }

    [Fact]
    public void VarAndStd()
    {
        GradCheck.Check(x => x[0].Var(), R(1, 2, 3));
        GradCheck.Check(x => x[0].Var(1, correction: 0, keepdim: true), R(2, 2, 3, 2));
        GradCheck.Check(x => x[0].Std([0, 2]), R(3, 2, 3, 2));
    }

    [Fact]
    public void SumMeanNorm()
    {
        GradCheck.Check(x => x[0].Sum(1), R(1, 2, 3));
        GradCheck.Check(x => x[0].Mean([0, 2], keepdim: true), R(2, 2, 3, 2));
        GradCheck.Check(x => x[0].Norm(2, 1), R(3, 2, 3));
        GradCheck.Check(x => x[0].Norm(), R(4, 2, 3));
    }

    [Fact]
    public void MaxAmaxClamp()
    {
        GradCheck.Check(x => x[0].Max(1).Values, R(1, 3, 4));
        GradCheck.Check(x => x[0].Amax(0), R(2, 3, 4));
        GradCheck.Check(x => x[0].Max(), R(3, 3, 4));
        GradCheck.Check(x => x[0].Clamp(-0.5, 0.5), R(4, 12));
        GradCheck.Check(x => x[0].Maximum(x[1]), R(5, 12), R(6, 12));
    }

    // ---- elementwise math ----
    [Fact]
    public void Pow()
    {
        GradCheck.Check(x => x[0].Pow(2.5), Positive(1, 8));
        GradCheck.Check(x => x[0].Pow(x[1]), Positive(2, 8), R(3, 8));
        GradCheck.Check(x => torch.Pow(1.7, x[0]), R(4, 8));
    }

    [Fact]
    public void Lerp()
    {
        GradCheck.Check(x => x[0].Lerp(x[1], 0.3), R(1, 8), R(2, 8));
        GradCheck.Check(x => x[0].Lerp(x[1], x[2]), R(3, 8), R(4, 8), R(5, 8));
    }

    [Fact]
    public void UnaryMath()
    {
        GradCheck.Check(x => x[0].Abs(), R(1, 8));
        GradCheck.Check(x => x[0].Exp(), R(2, 8));
        GradCheck.Check(x => x[0].Log(), Positive(3, 8));
        GradCheck.Check(x => x[0].Sqrt(), Positive(4, 8));
        GradCheck.Check(x => x[0].Rsqrt(), Positive(5, 8));
        GradCheck.Check(x => x[0].Sin(), R(6, 8));
        GradCheck.Check(x => x[0].Cos(), R(7, 8));
        GradCheck.Check(x => x[0].Reciprocal(), Positive(8, 8));
        GradCheck.Check(x => x[0].Square(), R(9, 8));
    }

    [Fact]
    public void ScalarDividedByTensor()
    {
        // Reciprocal's backward reads its own result: computing c / x by scaling that result in place made backward fail.
        GradCheck.Check(x => 3.0 / x[0], Positive(10, 8));

        using var scope = torch.NewDisposeScope();
        var input = Positive(11, 8).RequiresGrad_();
        (3.0 / input).Sum().Backward();
        var x = input.ToArray<double>();
        var grad = input.Grad!.ToArray<double>();
        // The analytic derivative -3/x²: autograd computes -grad·r² with r = 1/x, a few float64 roundings from the
        // formula, so 1e-14 relative (about 50 ulp) separates rounding from any real error.
        for (var i = 0; i < x.Length; i++)
        {
            var expected = -3.0 / (x[i] * x[i]);
            Assert.True(Math.Abs(grad[i] - expected) <= 1e-14 * Math.Abs(expected), $"element {i}: {grad[i]} vs {expected}");
        }
    }

    [Fact]
    public void TheCheckerCatchesAWrongGradient()
    {
        // x·detach(x) has true gradient 2x but autograd sees only x: the check must fail.
        Assert.ThrowsAny<Xunit.Sdk.XunitException>(() => GradCheck.Check(x => x[0].Mul(x[0].Detach()), R(1, 4)));
    }
}
