namespace SdAppliance.Torch.Tests;

/// <summary>The in-place operations optimizers use: values by hand, and the update lands in the tensor itself.</summary>
public class OptimInPlaceOpsTests
{
    private static void Check(float[] start, Func<Tensor, Tensor> op, float[] expected)
    {
        using var scope = torch.NewDisposeScope();
        var x = torch.Tensor(start);
        var view = x.View(start.Length); // shares storage: sees the in-place write
        var result = op(x);
        Assert.Same(x, result);
        // All inputs are exact binary fractions, so most results are exact; 1e-6 covers sqrt/rsqrt rounding.
        var got = view.ToArray<float>();
        for (var i = 0; i < expected.Length; i++) Assert.Equal(expected[i], got[i], 1e-6);
    }

    [Fact]
    public void ArithmeticAndInterpolation()
    {
        using var scope = torch.NewDisposeScope();
        var a = torch.Tensor([1f, 2f]);
        var b = torch.Tensor([4f, -8f]);
        Check([1f, 1f], x => x.Addcmul_(a, b, 0.5), [1 + 0.5f * 4, 1 + 0.5f * -16]);
        Check([1f, 1f], x => x.Addcdiv_(b, a, -0.25), [1 - 1f, 1 + 1f]);
        Check([0f, 4f], x => x.Lerp_(b, 0.25), [1f, 1f]);
        Check([0f, 4f], x => x.Lerp_(b, torch.Tensor([0.5f, 0.75f])), [2f, -5f]);
        Check([0.5f, -2f], x => x.Pow_(2), [0.25f, 4f]);
    }

    [Fact]
    public void UnaryOps()
    {
        Check([4f, 0.25f], x => x.Sqrt_(), [2f, 0.5f]);
        Check([4f, 0.25f], x => x.Rsqrt_(), [0.5f, 2f]);
        Check([-3f, 0f, 2f], x => x.Sign_(), [-1f, 0f, 1f]);
        Check([-3f, 2f], x => x.Abs_(), [3f, 2f]);
        Check([-3f, 2f], x => x.Neg_(), [3f, -2f]);
        Check([4f, -0.5f], x => x.Reciprocal_(), [0.25f, -2f]);
    }

    [Fact]
    public void ClampingAndMaximum()
    {
        using var scope = torch.NewDisposeScope();
        Check([-3f, 0.5f, 7f], x => x.Clamp_(-1, 1), [-1f, 0.5f, 1f]);
        Check([-3f, 0.5f, 7f], x => x.Clamp_(min: 0), [0f, 0.5f, 7f]);
        Check([-3f, 0.5f, 7f], x => x.ClampMin_(1), [1f, 1f, 7f]);
        Check([-3f, 0.5f, 7f], x => x.ClampMax_(0), [-3f, 0f, 0f]);
        var lo = torch.Tensor([0f, 1f, 2f]);
        var hi = torch.Tensor([1f, 2f, 3f]);
        Check([-3f, 0.5f, 7f], x => x.Clamp_(lo, hi), [0f, 1f, 3f]);
        Check([-3f, 0.5f, 7f], x => x.ClampMin_(lo), [0f, 1f, 7f]);
        Check([-3f, 0.5f, 7f], x => x.ClampMax_(hi), [-3f, 0.5f, 3f]);
        Check([-3f, 0.5f, 7f], x => x.Maximum_(lo), [0f, 1f, 7f]);
    }
}
