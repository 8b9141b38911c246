using System.Globalization;

namespace SdAppliance.Torch;

/// <summary>
/// What a job asks of the CPU: the elements of its largest activation (batch × channels × height × width of
/// the widest layer; this is what decides whether libtorch's operators gain from splitting across threads)
/// and how many jobs of this process run at the same time, this one included.
/// </summary>
public readonly record struct ThreadDemand(long ActivationElements, int ConcurrentJobs = 1)
{
    /// <summary>The demand of work whose widest layer is <paramref name="channels"/> × <paramref name="height"/> × <paramref name="width"/> per sample.</summary>
    public static ThreadDemand ForActivation(long batch, long channels, long height, long width, int concurrentJobs = 1) =>
        new(batch * channels * height * width, concurrentJobs);
}

/// <summary>The machine as a job finds it: cores this process may use, and runnable tasks of other processes.</summary>
public readonly record struct MachineLoad(int Cores, double OtherRunnable)
{
    /// <summary>This process's cores and the one-minute load average (which counts this process's own recent work too).</summary>
    public static MachineLoad Read() => new(Environment.ProcessorCount, ReadLoadAverage() ?? 0);

    private static double? ReadLoadAverage()
    {
        try
        {
            var first = File.ReadAllText("/proc/loadavg").Split(' ')[0];
            return double.TryParse(first, NumberStyles.Float, CultureInfo.InvariantCulture, out var load) ? load : null;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }
}

/// <summary>
/// How many intra-op threads a job gets, and how OpenMP's idle workers wait. libtorch (and the OpenBLAS and
/// oneDNN it calls) share one OpenMP pool whose threads meet at a barrier after every parallel operator.
/// On a busy machine a worker that has lost its core keeps the others waiting, and spinning waiters take
/// cores from the processes that hold them: tiny-model generation on 2 threads of a busy 2-core box ran
/// 10-38x slower than on one. Hence: small work runs on one thread (there is nothing to split), larger work
/// on the cores nobody else is using, shared among this process's jobs, and idle workers sleep at once.
/// </summary>
public static class ThreadPolicy
{
    /// <summary>
    /// Below this many elements per activation a job runs on one thread: libtorch splits an elementwise operator
    /// only above 32,768 elements (its grain size), and convolutions and matrix products this small finish in less
    /// time than a barrier costs when a core is contended.
    /// </summary>
    public const long SmallWorkElements = 1 << 17;

    /// <summary>The intra-op thread count for a job: a pure function of the demand and the machine.</summary>
    public static int ChooseThreads(ThreadDemand demand, MachineLoad machine)
    {
        if (demand.ActivationElements < SmallWorkElements || machine.Cores <= 1) return 1;
        // A core counts as taken once half a task on average runs there; one is always left to us.
        var taken = (int)Math.Clamp(Math.Round(machine.OtherRunnable, MidpointRounding.AwayFromZero), 0, machine.Cores - 1);
        return Math.Max(1, (machine.Cores - taken) / Math.Max(1, demand.ConcurrentJobs));
    }

    /// <summary>
    /// The OpenMP environment for the process, fixed when libgomp loads (before the first native call), given the
    /// variables already set: idle workers sleep at once (OMP_WAIT_POLICY=PASSIVE) instead of spinning for about
    /// 300,000 iterations after every operator. A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT is kept.
    /// </summary>
    public static IReadOnlyDictionary<string, string> WaitEnvironment(Func<string, string?> environment)
    {
        var chosen = environment("OMP_WAIT_POLICY") is { Length: > 0 } || environment("GOMP_SPINCOUNT") is { Length: > 0 };
        return chosen ? new Dictionary<string, string>() : new Dictionary<string, string> { ["OMP_WAIT_POLICY"] = "PASSIVE" };
    }

    /// <summary>Whether the user fixed the thread count in the environment (then the policy leaves it alone).</summary>
    public static bool ThreadsChosenByUser(Func<string, string?> environment) =>
        environment("OMP_NUM_THREADS") is { Length: > 0 } || environment("MKL_NUM_THREADS") is { Length: > 0 };
}
