using SdAppliance.Torch;
using SdAppliance.Torch.Distributed;
using SdAppliance.Training.Data;

namespace SdAppliance.Training.Distributed;

/// <summary>
/// One rank of a data-parallel run, as DistributedDataParallel under accelerate: the process group (rank 0 hosts the
/// rendezvous), rank 0's trained weights on every rank, this rank's share of each global batch, and the gradient
/// buckets that sum every rank's gradients while backward runs.
/// </summary>
/// <remarks>
/// Every rank draws the random numbers of the whole global batch from the same generator and keeps its rows, and the
/// loss weights are those of the global batch, so the summed gradients are the one-process gradients of that batch
/// (up to the order of float sums) and every rank's generators stay equal.
/// </remarks>
internal sealed class DataParallel : IDisposable
{
    private readonly TcpStore store;
    private GradientBuckets? buckets;

    private DataParallel(TcpStore store, ProcessGroup group, DataParallelRank rank)
    {
        this.store = store;
        Group = group;
        Rank = rank;
    }

    public ProcessGroup Group { get; }

    public DataParallelRank Rank { get; }

    public int WorldSize => Rank.WorldSize;

    public bool IsMain => Rank.IsMain;

    /// <summary>Joins the run's other ranks (blocking until all have come, or ddp_timeout); null for a one-process run.</summary>
    public static DataParallel? Join(TrainingConfig config, DataParallelRank? rank)
    {
        var world = config.WorldSize();
        if (rank is null)
        {
            if (world == 1) return null;
            throw new TrainingConfigException(
                $"num_processes: a run of {world} ranks starts each rank through the launcher (which sets {DataParallelRank.RankVariable} and {DataParallelRank.WorldSizeVariable}); this process was started as none");
        }
        if (rank.WorldSize != world)
            throw new TrainingConfigException(
                $"num_processes: this rank was launched into a world of {rank.WorldSize}, but num_processes x num_machines is {config.NumProcesses} x {config.NumMachines} = {world}; launch it with the same settings");
        var timeout = TimeSpan.FromMinutes(config.DdpTimeout);
        var store = rank.IsMain
            ? TcpStore.Host(config.MainProcessIp, config.MainProcessPort, world, timeout)
            : TcpStore.Connect(config.MainProcessIp, config.MainProcessPort, world, timeout);
        try
        {
            var backend = Backend(config);
            // On one machine every rank talks over the loopback; across machines Gloo binds this machine's own name.
            var hostname = config.NumMachines == 1 ? config.MainProcessIp : null;
            return new DataParallel(store, new ProcessGroup(store, rank.Rank, world, backend, timeout, hostname), rank);
        }
        catch
        {
            store.Dispose();
            throw;
        }
    }

    /// <summary>The backend ddp_backend names, else NCCL for CUDA devices and Gloo for the CPU.</summary>
    public static ProcessGroupBackend Backend(TrainingConfig config) =>
        (config.DdpBackend ?? (Device.Parse(config.DeviceName).IsCuda ? "nccl" : "gloo")) == "nccl" ? ProcessGroupBackend.Nccl : ProcessGroupBackend.Gloo;

    /// <summary>This rank's device: on CUDA the local rank's entry of devices (default: cuda:LOCAL_RANK); on the CPU the CPU.</summary>
    public static string DeviceName(TrainingConfig config, DataParallelRank rank)
    {
        var device = Device.Parse(config.DeviceName);
        if (!device.IsCuda) return config.DeviceName;
        var index = config.Devices is { } list ? TrainingConfig.ParseDevices(list)[rank.LocalRank] : rank.LocalRank;
        return $"cuda:{index}";
    }

    /// <summary>Every rank starts from rank 0's trained values (a resumed state or a fresh initialisation alike).</summary>
    public void BroadcastFromMain(IReadOnlyList<Tensor> trained)
    {
        using var noGrad = Autograd.NoGrad();
        Group.Broadcast(trained, root: 0);
    }

    /// <summary>Gradient buckets over the trained parameters, summed (the loss weights are already the global batch's).</summary>
    public GradientBuckets Buckets(IReadOnlyList<Tensor> trained, double bucketCapMb)
    {
        buckets?.Dispose();
        var bytes = (long)(bucketCapMb * (1 << 20));
        // DistributedDataParallel's first bucket is 1 MiB, so that the first all-reduce starts early in backward.
        buckets = new GradientBuckets(Group, trained, ReduceOp.Sum, bytes, Math.Min(bytes, 1L << 20));
        return buckets;
    }

    /// <summary>The rows of a global batch of <paramref name="count"/> examples this rank trains on: an equal share, the first ranks one more when it does not divide.</summary>
    public (int Start, int Count) Share(int count)
    {
        var each = count / WorldSize;
        var extra = count % WorldSize;
        var start = Rank.Rank * each + Math.Min(Rank.Rank, extra);
        return (start, each + (Rank.Rank < extra ? 1 : 0));
    }

    /// <summary>
    /// The sum over the ranks of this step's values (the loss), and whether any rank was asked to stop: one all-reduce
    /// per optimizer step, so that every rank logs the same loss and all stop at the same step.
    /// </summary>
    public (double Sum, bool StopRequested) EndStep(double value, bool stopRequested)
    {
        using var values = torch.Tensor([value, stopRequested ? 1 : 0]);
        Group.AllReduce([values]);
        var reduced = values.ToArray<double>();
        return (reduced[0], reduced[1] > 0);
    }

    /// <summary>Every rank's default CPU generator state, in rank order (what dropout and other draws outside the run's generator use).</summary>
    public IReadOnlyList<byte[]> GatherDefaultGenerators()
    {
        using var cpuDefault = Generator.Default(Device.Cpu);
        using var mine = cpuDefault.GetState();
        var all = Group.AllGather(mine);
        try
        {
            return [.. all.Select(t => t.ToBytes())];
        }
        finally
        {
            foreach (var t in all) t.Dispose();
        }
    }

    public void Barrier() => Group.Barrier();

    public void Dispose()
    {
        buckets?.Dispose();
        Group.Dispose();
        store.Dispose();
    }
}
