using static SdAppliance.Torch.Native.LibSdTorch;

namespace SdAppliance.Torch.Distributed;

/// <summary>
/// DistributedDataParallel's gradient synchronisation: the parameters' gradients in buckets (a small first one, then
/// <c>bucket_cap_mb</c>, filled in reverse parameter order), each all-reduced as soon as backward has produced all its
/// gradients, while backward goes on with the earlier layers. <see cref="Prepare"/> arms it for the next backward (the
/// last micro-batch of an accumulation; the others accumulate locally, as under <c>no_sync</c>); <see cref="Finish"/>,
/// after that backward, waits and leaves the reduced gradients in <c>.grad</c>.
/// </summary>
public sealed class GradientBuckets : IDisposable
{
    private IntPtr handle;
    private readonly ProcessGroup group;

    /// <param name="op">Sum or average over the ranks.</param>
    public unsafe GradientBuckets(ProcessGroup group, IReadOnlyList<Tensor> parameters, ReduceOp op, long bucketBytes = 25L << 20, long firstBucketBytes = 1L << 20)
    {
        this.group = group;
        var handles = parameters.Select(p => p.Handle).ToArray();
        fixed (IntPtr* p = handles) handle = CheckHandle(sdt_grad_buckets_new(group.Handle, p, handles.Length, bucketBytes, firstBucketBytes, (int)op));
        Count = Check(sdt_grad_buckets_count(handle));
    }

    ~GradientBuckets() => Free();

    /// <summary>How many buckets (all-reduces) one synchronisation takes.</summary>
    public int Count { get; }

    private IntPtr Handle => handle != IntPtr.Zero ? handle : throw new ObjectDisposedException(nameof(GradientBuckets));

    /// <summary>Before the backward whose gradients are to be synchronised.</summary>
    public void Prepare() => Check(sdt_grad_buckets_prepare(Handle));

    /// <summary>After that backward: every rank's gradients reduced into every rank's <c>.grad</c>.</summary>
    public void Finish() => group.Run("the gradient all-reduce", sdt_grad_buckets_finish(Handle));

    private void Free()
    {
        var h = Interlocked.Exchange(ref handle, IntPtr.Zero);
        if (h != IntPtr.Zero) sdt_grad_buckets_free(h);
    }

    public void Dispose()
    {
        Free();
        GC.SuppressFinalize(this);
    }
}
