using SdAppliance.Torch.Optim;

namespace SdAppliance.Torch.Tests;

public class OptimGradClipTests
{
    // Gradients (3, 4) and (12): 2-norm 13, 1-norm 19, max-norm 12, all exact in float32.
    private static (Tensor A, Tensor B, Tensor NoGrad) Params()
    {
        var a = torch.Zeros([2]).RequiresGrad_();
        var b = torch.Zeros([1]).RequiresGrad_();
        var c = torch.Zeros([1]).RequiresGrad_();
        a.Grad = torch.Tensor([3f, 4f]);
        b.Grad = torch.Tensor([12f]);
        return (a, b, c);
    }

    private static float[] GradOf(Tensor p)
    {
        using var g = p.Grad!;
        return g.ToArray<float>();
    }

    [Theory]
    [InlineData(2.0, 13.0)]
    [InlineData(1.0, 19.0)]
    [InlineData(double.PositiveInfinity, 12.0)]
    public void ReturnsTheTotalNormAndScalesByMaxOverTotal(double normType, double total)
    {
        using var scope = torch.NewDisposeScope();
        var (a, b, c) = Params();
        using var norm = GradClipping.ClipGradNorm([a, b, c], maxNorm: 6.5, normType);
        Assert.Equal(total, norm.Item(), 1e-5);
        // coef = 6.5 / (total + 1e-6): float32 products carry a relative error of a few 1e-7.
        var coef = 6.5 / (total + 1e-6);
        Assert.Equal(3 * coef, GradOf(a)[0], 1e-5);
        Assert.Equal(4 * coef, GradOf(a)[1], 1e-5);
        Assert.Equal(12 * coef, GradOf(b)[0], 1e-5);
        Assert.Null(c.Grad);
    }

    [Fact]
    public void LeavesGradientsBelowTheLimitUnchanged()
    {
        using var scope = torch.NewDisposeScope();
        var (a, b, _) = Params();
        using var norm = GradClipping.ClipGradNorm([a, b], maxNorm: 100);
        Assert.Equal(13.0, norm.Item(), 1e-5);
        Assert.Equal([3f, 4f], GradOf(a));
        Assert.Equal([12f], GradOf(b));
    }

    [Fact]
    public void NoGradientsGiveZero()
    {
        using var scope = torch.NewDisposeScope();
        var p = torch.Zeros([2]).RequiresGrad_();
        using var norm = GradClipping.ClipGradNorm([p], 1.0);
        Assert.Equal(0.0, norm.Item());
    }

    [Fact]
    public void NonFiniteNormIsReportedWhenAsked()
    {
        using var scope = torch.NewDisposeScope();
        var p = torch.Zeros([2]).RequiresGrad_();
        p.Grad = torch.Tensor([float.NaN, 1f]);
        Assert.Throws<InvalidOperationException>(() => GradClipping.ClipGradNorm([p], 1.0, errorIfNonfinite: true));
    }

    [Fact]
    public void ClipGradValueClamps()
    {
        using var scope = torch.NewDisposeScope();
        var (a, b, _) = Params();
        GradClipping.ClipGradValue([a, b], 3.5);
        Assert.Equal([3f, 3.5f], GradOf(a));
        Assert.Equal([3.5f], GradOf(b));
    }
}
