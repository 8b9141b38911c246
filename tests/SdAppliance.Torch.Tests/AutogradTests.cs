
namespace SdAppliance.Torch.Tests;

[Collection(DefaultGeneratorCollection.Name)]
public class AutogradTests
{
    [Fact]
    public void BackwardAccumulatesIntoLeaves()
    {
        using var a = torch.Tensor([1f, 2f, 3f]).RequiresGrad_();
        using var loss = (a * a).Sum();
        loss.Backward(retainGraph: true);
        loss.Backward();
        using var grad = a.Grad!;
        Assert.Equal([4f, 8f, 12f], grad.ToArray<float>()); // 2 × 2a
        a.ZeroGrad();
        Assert.Null(a.Grad);
    }

    [Fact]
    public void BackwardTwiceWithoutRetainGraphFails()
    {
        using var a = torch.Tensor([1f, 2f]).RequiresGrad_();
        using var loss = (a * a).Sum();
        loss.Backward();
        var e = Assert.Throws<TorchException>(() => loss.Backward());
        Assert.Contains("second time", e.Message);
    }

    [Fact]
    public void BackwardOfNonScalarTakesAGradient()
    {
        using var a = torch.Tensor([1f, 2f]).RequiresGrad_();
        using var y = a * 3;
        using var g = torch.Tensor([1f, 10f]);
        y.Backward(g);
        using var grad = a.Grad!;
        Assert.Equal([3f, 30f], grad.ToArray<float>());
        using var z = a * 3;
        Assert.Throws<TorchException>(() => z.Backward());
    }

    [Fact]
    public void NoGradAndInferenceModeStopRecording()
    {
        using var a = torch.Ones([2]).RequiresGrad_();
        using (Autograd.NoGrad())
        {
            using var b = a * 2;
            Assert.False(b.RequiresGrad);
            Assert.False(Autograd.IsGradEnabled);
        }
        Assert.True(Autograd.IsGradEnabled);
        using (Autograd.InferenceMode())
        {
            Assert.True(Autograd.IsInferenceMode);
            using var c = a * 2;
            Assert.False(c.RequiresGrad);
        }
        Assert.False(Autograd.IsInferenceMode);
        using var d = a * 2;
        Assert.True(d.RequiresGrad);
        Assert.True(d.HasGradFn);
        Assert.False(d.IsLeaf);
    }

    [Fact]
    public void DetachCutsTheGraph()
    {
        using var a = torch.Ones([2]).RequiresGrad_();
        using var b = (a * 2).Detach();
        Assert.False(b.RequiresGrad);
        Assert.True(b.IsLeaf);
    }

    [Fact]
    public void CheckpointGivesTheSameValuesAndGradients()
    {
        using var w = torch.Randn([8, 8], new Generator(3)).RequiresGrad_();
        using var x0 = torch.Randn([4, 8], new Generator(4));
        Tensor Block(Tensor x)
        {
            using var h = Functional.Linear(x, w);
            using var d = Functional.Dropout(h, 0.5, training: true);
            return d * d;
        }

        float[] Run(bool checkpointed, out float[] grad)
        {
            using var x = x0.Clone().RequiresGrad_();
            torch.ManualSeed(11);
            using var y = checkpointed ? Autograd.Checkpoint(Block, x) : Block(x);
            using var loss = y.Sum();
            loss.Backward();
            using var g = w.Grad!;
            grad = g.ToArray<float>();
            using var gx = x.Grad!;
            w.ZeroGrad();
            return [.. y.ToArray<float>(), .. gx.ToArray<float>()];
        }

        var plain = Run(false, out var plainGrad);
        var ckpt = Run(true, out var ckptGrad);
        // Same kernels on the same inputs with the same dropout mask: bit-identical.
        Assert.Equal(plain, ckpt);
        Assert.Equal(plainGrad, ckptGrad);
    }

    [Fact]
    public void CheckpointReleasesItsCallbackWithTheGraph()
    {
        static WeakReference RunOnce()
        {
            var marker = new object();
            using var x = torch.Ones([3]).RequiresGrad_();
            Tensor Block(Tensor t)
            {
                GC.KeepAlive(marker);
                return t * 2;
            }
            using (var y = Autograd.Checkpoint(Block, x))
            using (var loss = y.Sum())
                loss.Backward();
            return new WeakReference(marker);
        }
        var weak = RunOnce();
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        Assert.False(weak.IsAlive, "the checkpointed delegate is still referenced after its graph was freed");
    }

    [Fact]
    public void CheckpointSurfacesExceptionsFromTheWrappedCall()
    {
        using var x = torch.Ones([2]).RequiresGrad_();
        var e = Assert.Throws<TorchException>(() => Autograd.Checkpoint((Tensor _) => throw new InvalidOperationException("boom"), x));
        Assert.Contains("boom", e.Message);
    }

    [Fact]
    public void CpuAutocastRunsMatmulInBFloat16()
    {
        using var a = torch.Ones([4, 4]);
        using (Autograd.Autocast(DeviceType.Cpu, DType.BFloat16))
        {
            Assert.True(Autograd.IsAutocastEnabled(DeviceType.Cpu));
            using var y = a.Mm(a);
            Assert.Equal(DType.BFloat16, y.DType);
        }
        Assert.False(Autograd.IsAutocastEnabled(DeviceType.Cpu));
        using var z = a.Mm(a);
        Assert.Equal(DType.Float32, z.DType);
    }
}
