using SdAppliance.Models.Blocks;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Tests;

/// <summary>The residual block's activation after a norm is written over the norm's output when no gradient can need it.</summary>
public sealed class ActivationInPlaceTests
{
    [Fact]
    public void WithoutAGradientSiluOverwritesTheOwnedTensorWithTheSameBits()
    {
        using var g = new Generator(1);
        using var x = torch.Randn([2, 8, 5, 5], g);
        using var expected = Functional.Silu(x);
        using var owned = x.Clone();
        var result = Activation.ApplyOverOwned("silu", owned);
        Assert.Same(owned, result);
        Assert.Equal(expected.ToArray<float>(), owned.ToArray<float>());
    }

    [Fact]
    public void ATensorThatRequiresGradIsLeftAsItWasForAutograd()
    {
        using var g = new Generator(2);
        using var x = torch.Randn([3, 4], g).RequiresGrad_();
        using var before = x.Detach().Clone();
        using var y = Activation.ApplyOverOwned("swish", x);
        Assert.NotSame(x, y);
        Assert.Equal(before.ToArray<float>(), x.Detach().ToArray<float>());
        using (var sum = y.Sum()) sum.Backward();
        // d/dx x·σ(x) = σ(x)·(1 + x·(1 − σ(x))), worked out here in double precision.
        var xs = before.ToArray<float>();
        var grads = x.Grad!.ToArray<float>();
        for (var i = 0; i < xs.Length; i++)
        {
            var s = 1 / (1 + Math.Exp(-xs[i]));
            Assert.Equal(s * (1 + xs[i] * (1 - s)), grads[i], 1e-6);
        }
    }

    [Fact]
    public void AResnetBlockLeavesItsInputAloneAndComputesTheSameWithOrWithoutGrad()
    {
        using var g = new Generator(3);
        using var block = new ResnetBlock2D(16, 16, 32, groups: 4);
        foreach (var p in block.Parameters()) Init.Normal_(p, 0, 0.2, g);
        using var x = torch.Randn([1, 16, 6, 6], g);
        using var temb = torch.Randn([1, 32], g);
        using var before = x.Clone();
        using var trained = block.Forward(x, temb);
        Tensor inferred;
        using (Autograd.InferenceMode()) inferred = block.Forward(x, temb);
        using (inferred)
        {
            Assert.Equal(before.ToArray<float>(), x.ToArray<float>());
            Assert.Equal(trained.Detach().ToArray<float>(), inferred.ToArray<float>());
        }
        Assert.True(trained.RequiresGrad);
    }
}
