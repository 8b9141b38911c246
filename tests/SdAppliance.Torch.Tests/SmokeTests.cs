using SdAppliance.Torch;

namespace SdAppliance.Torch.Tests;

public class SmokeTests
{
    [Fact]
    public void RandnWithSeedZeroMatchesPyTorch()
    {
        // torch.randn(3, generator=torch.Generator().manual_seed(0))
        using var g = new Generator(0);
        using var x = Torch.Randn([3], g);
        var v = x.ToArray<float>();
        Assert.Equal(1.5410f, v[0], 4);
        Assert.Equal(-0.2934f, v[1], 4);
        Assert.Equal(-2.1788f, v[2], 4);
    }

    [Fact]
    public void ArithmeticAndBackward()
    {
        using var a = Torch.Tensor([1f, 2f, 3f]).RequiresGrad_();
        using var b = a * a;
        using var s = Op(b);
        s.Backward();
        using var grad = a.Grad!;
        Assert.Equal([2f, 4f, 6f], grad.ToArray<float>());
    }

    private static Tensor Op(Tensor t) => SdAppliance.Torch.Native.Op.Get("aten::sum").Begin().T(t).Call();

    [Fact]
    public void ErrorsCarryLibtorchMessage()
    {
        using var a = Torch.Zeros([2, 3]);
        using var b = Torch.Zeros([4, 5]);
        var e = Assert.Throws<TorchException>(() => a + b);
        Assert.Contains("size of tensor", e.Message);
    }
}
