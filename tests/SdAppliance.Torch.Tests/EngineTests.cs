using System.Diagnostics;
using SdAppliance.Torch.Native;

namespace SdAppliance.Torch.Tests;

[Collection(DefaultGeneratorCollection.Name)]
public class EngineTests
{
    [Fact]
    public void RandnWithSeedZeroMatchesPyTorch()
    {
        // torch.randn(3, generator=torch.Generator().manual_seed(0)) printed by PyTorch 1.13 to 4 decimals.
        using var g = new Generator(0);
        using var x = torch.Randn([3], g);
        var v = x.ToArray<float>();
        Assert.Equal(1.5410f, v[0], 4);
        Assert.Equal(-0.2934f, v[1], 4);
        Assert.Equal(-2.1788f, v[2], 4);
    }

    [Fact]
    public void GeneratorStateRestoresTheSameDraws()
    {
        using var g = new Generator(1234);
        using (torch.Randn([5], g)) { }
        var state = g.GetStateBytes();
        using var first = torch.Randn([64], g);
        using var other = new Generator(99);
        other.SetStateBytes(state);
        using var again = torch.Randn([64], other);
        Assert.Equal(first.ToArray<float>(), again.ToArray<float>());
        Assert.Equal(1234UL, g.InitialSeed);
    }

    [Fact]
    public void ManualSeedDrivesTheDefaultGenerator()
    {
        torch.ManualSeed(7);
        using var a = torch.Rand([16]);
        torch.ManualSeed(7);
        using var b = torch.Rand([16]);
        using var g = new Generator(7);
        using var c = torch.Rand([16], g);
        Assert.Equal(a.ToArray<float>(), b.ToArray<float>());
        Assert.Equal(a.ToArray<float>(), c.ToArray<float>());
    }

    [Fact]
    public void DataRoundTripsThroughEveryDType()
    {
        foreach (var dtype in new[] { DType.Float32, DType.Float64, DType.Float16, DType.BFloat16, DType.Int64, DType.Int32, DType.UInt8, DType.Bool })
        {
            var bytes = new byte[6 * dtype.ElementSize()];
            // Values that are exact in every dtype: small non-negative integers (and 0/1 for bool).
            using var source = torch.Tensor([0f, 1f, 1f, 0f, 1f, 1f], 2, 3);
            using var converted = source.To(dtype);
            Assert.Equal(dtype, converted.DType);
            Assert.Equal([2L, 3L], converted.Shape);
            var raw = converted.ToBytes();
            Assert.Equal(bytes.Length, raw.Length);
            using var back = torch.FromBytes(raw, [2, 3], dtype);
            using var asFloat = back.To(DType.Float32);
            Assert.Equal(source.ToArray<float>(), asFloat.ToArray<float>());
        }
    }

    [Fact]
    public void WrongElementTypeIsRefused()
    {
        using var t = torch.Zeros([4], DType.Float64);
        var e = Assert.Throws<ArgumentException>(() => t.ToArray<float>());
        Assert.Contains("float64", e.Message);
        Assert.Throws<TorchException>(() => torch.FromArray<float>(new float[3], [2, 2], DType.Float32));
    }

    [Fact]
    public unsafe void ExternalMemoryIsSharedNotCopiedAndReleasedOnce()
    {
        var buffer = (float*)System.Runtime.InteropServices.NativeMemory.Alloc(4 * sizeof(float));
        for (var i = 0; i < 4; i++) buffer[i] = i;
        var released = 0;
        var t = torch.FromExternalMemory((IntPtr)buffer, [2, 2], DType.Float32, () => released++);
        buffer[3] = 42;
        Assert.Equal([0f, 1f, 2f, 42f], t.ToArray<float>());
        var alias = t.Alias();
        t.Dispose();
        Assert.Equal(0, released);
        alias.Dispose();
        Assert.Equal(1, released);
        System.Runtime.InteropServices.NativeMemory.Free(buffer);
    }

    [Fact]
    public void ErrorsCarryLibtorchMessageWithoutBacktrace()
    {
        using var a = torch.Zeros([2, 3]);
        using var b = torch.Zeros([4, 5]);
        var e = Assert.Throws<TorchException>(() => a + b);
        Assert.Contains("aten::add", e.Message);
        Assert.Contains("size of tensor a (3) must match the size of tensor b (5)", e.Message);
        Assert.DoesNotContain("frame #", e.Message);
        // The engine stays usable after an error.
        using var c = a + a;
        Assert.Equal([2L, 3L], c.Shape);
    }

    [Fact]
    public void UnknownOperatorNamesTheOperator()
    {
        var e = Assert.Throws<TorchException>(() => Op.Get("aten::no_such_op").Begin().Call());
        Assert.Contains("aten::no_such_op", e.Message);
        Assert.False(Op.Get("aten::no_such_op").Exists);
        Assert.True(Op.Get("aten::add", "Tensor").Exists);
    }

    [Fact]
    public void MissingArgumentIsNamed()
    {
        var e = Assert.Throws<TorchException>(() => Op.Get("aten::add", "Tensor").Begin().Call());
        Assert.Contains("'self'", e.Message);
    }

    [Fact]
    public void EngineReportsItself()
    {
        Assert.Matches(@"^\d+\.\d+", Engine.TorchVersion);
        Assert.Contains("torch", Engine.TorchLibraryPath);
        Assert.True(Engine.NumThreads >= 1);
        Assert.False(Cuda.IsAvailable && Cuda.DeviceCount == 0);
    }

    [Fact]
    public void UsesEveryCoreWithoutBeingAsked()
    {
        // No test calls Engine.EnsureLoaded or sets the thread count: the first native call alone must give
        // libtorch every core (it counts 1 on VMs whose cpuinfo reports one physical core). A number chosen
        // in the environment is libtorch's to honour.
        if (Environment.GetEnvironmentVariable("OMP_NUM_THREADS") is { Length: > 0 } || Environment.GetEnvironmentVariable("MKL_NUM_THREADS") is { Length: > 0 })
            return;
        Assert.Equal(Environment.ProcessorCount, Engine.NumThreads);
    }

    [Fact]
    public void DisposeScopeFreesWhatItOwnsAndKeepsWhatMovesOut()
    {
        Tensor kept, dropped;
        using (var outer = torch.NewDisposeScope())
        {
            using (torch.NewDisposeScope())
            {
                dropped = torch.Ones([2]);
                kept = (dropped * 3).MoveToOuterScope();
            }
            Assert.True(dropped.IsDisposed);
            Assert.False(kept.IsDisposed);
            Assert.Equal(1, outer.Count);
            kept.DetachFromDisposeScope();
        }
        Assert.False(kept.IsDisposed);
        Assert.Equal([3f, 3f], kept.ToArray<float>());
        kept.Dispose();
        Assert.Throws<ObjectDisposedException>(() => kept.Shape);
    }

    [Fact]
    public void MoveToOuterScopeHandsTheCallerItsOwnHandle()
    {
        using var outer = torch.NewDisposeScope();
        var input = torch.Ones([2]);
        Tensor made, passedThrough;
        List<Tensor> both;
        using (var scope = torch.NewDisposeScope())
        {
            made = scope.MoveToOuterScope(input * 2);
            // A forward that returns its input unchanged must not hand over the caller's own handle.
            passedThrough = scope.MoveToOuterScope(input);
            var skip = input + 1;
            both = scope.MoveToOuterScope([skip, skip]);
            Assert.Null(scope.MoveToOuterScope((Tensor?)null));
        }
        Assert.False(made.IsDisposed);
        Assert.NotSame(input, passedThrough);
        Assert.True(passedThrough.IsSameAs(input));
        Assert.NotSame(both[0], both[1]);
        Assert.True(both[0].IsSameAs(both[1]));
        Assert.Equal(5, outer.Count);
        passedThrough.Dispose();
        Assert.Equal([1f, 1f], input.ToArray<float>());
    }

    [Fact]
    public void TenThousandStepsInDisposeScopesDoNotGrowMemory()
    {
        // A miniature training step (forward, backward, in-place update) repeated; resident memory
        // after warm-up must stay flat. Each step allocates ~40 KB of tensors, so a leak of even one
        // tensor per step would add > 100 MB over 10,000 steps; allocator noise stays far below 32 MB.
        using var w = torch.Randn([64, 64], new Generator(0)).RequiresGrad_();
        using var x = torch.Randn([16, 64], new Generator(1));
        void Step()
        {
            using var scope = torch.NewDisposeScope();
            var y = Functional.Linear(x, w);
            (y * y).Sum().Backward();
            using (Autograd.NoGrad())
                w.Sub_(w.Grad!, 1e-6);
            w.ZeroGrad();
        }
        for (var i = 0; i < 500; i++) Step();
        GC.Collect();
        GC.WaitForPendingFinalizers();
        var before = Process.GetCurrentProcess().WorkingSet64;
        for (var i = 0; i < 10_000; i++) Step();
        GC.Collect();
        GC.WaitForPendingFinalizers();
        var growth = Process.GetCurrentProcess().WorkingSet64 - before;
        Assert.True(growth < 32L << 20, $"resident memory grew by {growth >> 20} MB over 10,000 steps");
    }
}
