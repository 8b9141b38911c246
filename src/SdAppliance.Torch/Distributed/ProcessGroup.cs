using System.Globalization;
using static SdAppliance.Torch.Native.LibSdTorch;

namespace SdAppliance.Torch.Distributed;

/// <summary>The c10d backend of a process group: Gloo (CPU tensors, every libtorch build) or NCCL (CUDA tensors).</summary>
public enum ProcessGroupBackend
{
    Gloo = 0,
    Nccl = 1,
}

/// <summary>How a collective combines the ranks' tensors (Gloo has no average: it is the sum divided by the world size).</summary>
public enum ReduceOp
{
    Sum = 0,
    Average = 1,
    Max = 2,
    Min = 3,
}

/// <summary>
/// The ranks of one data-parallel job, as <c>torch.distributed.init_process_group</c> makes them: c10d's Gloo or NCCL
/// process group on a <see cref="TcpStore"/>, with the collectives training needs. Every collective blocks until every
/// rank has made it, fails after <see cref="Timeout"/> or as soon as a peer's connection drops, and then throws a
/// <see cref="RankLostException"/> naming the ranks that stopped answering (each rank beats a heartbeat in the store,
/// so the survivors can tell who is gone).
/// </summary>
public sealed class ProcessGroup : IDisposable
{
    /// <summary>How often each rank tells the store it is alive; a rank whose beat does not move over six of these is lost.</summary>
    internal static readonly TimeSpan HeartbeatInterval = TimeSpan.FromMilliseconds(500);

    private IntPtr handle;
    private readonly TcpStore heartbeatStore;
    private readonly Thread heartbeat;
    private readonly ManualResetEventSlim stopping = new();
    private readonly string prefix;
    private bool failed;

    /// <summary>
    /// Joins the group: blocks until all <paramref name="worldSize"/> ranks have joined through <paramref name="store"/>, or
    /// fails after <paramref name="timeout"/> naming the ranks that did not come.
    /// </summary>
    /// <param name="hostname">The address Gloo binds and tells its peers (null: this machine's host name).</param>
    /// <param name="name">Several groups may share one store under different names.</param>
    public ProcessGroup(TcpStore store, int rank, int worldSize, ProcessGroupBackend backend, TimeSpan timeout, string? hostname = null, string name = "default_pg")
    {
        if (worldSize < 1 || rank < 0 || rank >= worldSize)
            throw new ArgumentOutOfRangeException(nameof(rank), $"rank {rank} is outside a world of {worldSize} (0..{worldSize - 1})");
        if (backend == ProcessGroupBackend.Nccl && !NcclAvailable)
            throw new NotSupportedException("the nccl backend needs a CUDA libtorch with NCCL (this libsdtorch was built without it); use gloo");
        Rank = rank;
        WorldSize = worldSize;
        Backend = backend;
        Timeout = timeout;
        Store = store;
        prefix = name;
        // Its own connection, so that a beat never waits behind a long get of the main one.
        heartbeatStore = store.NewClient(TimeSpan.FromSeconds(5));
        // A thread of its own: a pool timer would stop beating when the pool is starved, and the rank would look lost.
        heartbeat = new Thread(BeatUntilStopped) { IsBackground = true, Name = $"rank {rank} heartbeat" };
        heartbeat.Start();
        var groupStore = CheckHandle(sdt_prefix_store_new(name, store.Handle));
        try
        {
            handle = sdt_process_group_new(groupStore, (int)backend, rank, worldSize, (long)timeout.TotalMilliseconds, hostname);
            if (handle == IntPtr.Zero)
            {
                var message = LastError() ?? "no process group and no error";
                sdt_clear_error();
                throw Explain("the rendezvous", message);
            }
        }
        catch
        {
            StopHeartbeat();
            throw;
        }
        finally
        {
            sdt_store_free(groupStore);
        }
    }

    ~ProcessGroup() => Free();

    /// <summary>True when this libsdtorch can make NCCL groups.</summary>
    public static bool NcclAvailable => sdt_nccl_available() == 1;

    public int Rank { get; }

    public int WorldSize { get; }

    public ProcessGroupBackend Backend { get; }

    public TimeSpan Timeout { get; }

    /// <summary>The rendezvous store, for small values between ranks.</summary>
    public TcpStore Store { get; }

    internal IntPtr Handle => handle != IntPtr.Zero ? handle : throw new ObjectDisposedException(nameof(ProcessGroup));

    /// <summary>Combines every rank's tensors in place (each rank passes the same shapes and dtypes, in the same order).</summary>
    public unsafe void AllReduce(IReadOnlyList<Tensor> tensors, ReduceOp op = ReduceOp.Sum)
    {
        var handles = tensors.Select(t => t.Handle).ToArray();
        fixed (IntPtr* p = handles) Run("all_reduce", sdt_all_reduce(Handle, p, handles.Length, (int)op));
    }

    /// <summary>Copies <paramref name="root"/>'s values into every rank's tensors, coalesced into buckets of <paramref name="bucketBytes"/>.</summary>
    public unsafe void Broadcast(IReadOnlyList<Tensor> tensors, int root = 0, long bucketBytes = 256L << 20)
    {
        var handles = tensors.Select(t => t.Handle).ToArray();
        fixed (IntPtr* p = handles) Run("broadcast", sdt_broadcast(Handle, p, handles.Length, root, bucketBytes));
    }

    /// <summary>Every rank's <paramref name="input"/>, in rank order (each rank passes the same shape and dtype).</summary>
    public unsafe Tensor[] AllGather(Tensor input)
    {
        var outputs = Enumerable.Range(0, WorldSize).Select(_ => torch.EmptyLike(input)).ToArray();
        var handles = outputs.Select(t => t.Handle).ToArray();
        fixed (IntPtr* p = handles) Run("all_gather", sdt_all_gather(Handle, input.Handle, p, handles.Length));
        return outputs;
    }

    /// <summary>Returns when every rank has reached it.</summary>
    public void Barrier() => Run("barrier", sdt_barrier(Handle));

    /// <summary>Turns a failed collective's libtorch message into the exception that names the lost ranks.</summary>
    internal void Run(string operation, int status)
    {
        if (status >= 0) return;
        var message = LastError();
        if (message is null) return;
        sdt_clear_error();
        throw Explain(operation, message);
    }

    /// <summary>
    /// Which ranks are gone, read from their heartbeats: those whose beat did not move over a few intervals and that did
    /// not say they saw the failure too (a survivor stops after it, and must not be counted lost by a slower one).
    /// When the store itself does not answer, the main process (rank 0), which hosts it, is gone.
    /// </summary>
    internal Exception Explain(string operation, string message)
    {
        failed = true;
        var lost = new List<int>();
        try
        {
            lock (heartbeatStore) heartbeatStore.Set(FailedKey(Rank), "1");
            var before = Beats();
            Thread.Sleep(HeartbeatInterval * 6);
            var after = Beats();
            lock (heartbeatStore)
                lost.AddRange(Enumerable.Range(0, WorldSize).Where(r => r != Rank && after[r] == before[r] && !heartbeatStore.Contains(FailedKey(r))));
        }
        catch (TorchException)
        {
            if (Rank != 0) lost.Add(0);
        }
        return lost.Count == 0
            ? new TorchException($"rank {Rank} of {WorldSize}: {operation} failed: {message}")
            : new RankLostException(lost, Rank, WorldSize, operation, message);
    }

    private long[] Beats()
    {
        lock (heartbeatStore)
            return [.. Enumerable.Range(0, WorldSize).Select(r => heartbeatStore.Add(BeatKey(r), 0))];
    }

    private string FailedKey(int rank) => $"{prefix}/failed/{rank.ToString(CultureInfo.InvariantCulture)}";

    private string BeatKey(int rank) => $"{prefix}/heartbeat/{rank.ToString(CultureInfo.InvariantCulture)}";

    private void BeatUntilStopped()
    {
        do
        {
            try
            {
                lock (heartbeatStore) heartbeatStore.Add(BeatKey(Rank), 1);
            }
            catch (TorchException)
            {
                // The store is gone (the main process ended or died): the next collective says so.
                return;
            }
        }
        while (!stopping.Wait(HeartbeatInterval));
    }

    private void StopHeartbeat()
    {
        if (stopping.IsSet) return;
        stopping.Set();
        heartbeat.Join();
        heartbeatStore.Dispose();
    }

    private void Free()
    {
        var h = Interlocked.Exchange(ref handle, IntPtr.Zero);
        if (h != IntPtr.Zero) sdt_process_group_free(h);
    }

    public void Dispose()
    {
        // The store lives in this process: after a failure the other survivors still read it to tell who is lost.
        if (failed && Store.IsServer && WorldSize > 1) Thread.Sleep(HeartbeatInterval * 8);
        StopHeartbeat();
        Free();
        GC.SuppressFinalize(this);
    }
}
