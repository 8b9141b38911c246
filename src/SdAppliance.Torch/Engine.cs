using System.Runtime.InteropServices;
using static SdAppliance.Torch.Native.LibSdTorch;

namespace SdAppliance.Torch;

/// <summary>What the engine runs on: libtorch's version and location, threads, CUDA devices.</summary>
public static unsafe partial class Engine
{
    /// <summary>Loads libsdtorch and libtorch, turning a missing library into one actionable message.</summary>
    public static void EnsureLoaded()
    {
        try
        {
            _ = sdt_torch_version();
        }
        catch (DllNotFoundException e)
        {
            throw new TorchException(
                "the engine could not load libsdtorch/libtorch (" + e.Message + "). " +
                "Install libtorch (Debian: apt-get install libtorch-dev; or a PyTorch for the python3 on PATH; " +
                "or set SDAPP_LIBTORCH to an unpacked libtorch) and rebuild with 'dotnet build'.");
        }
    }

    /// <summary>
    /// Runs once, before the first native call (from LibSdTorch's static constructor): keeps large blocks in glibc's
    /// heap (<see cref="HeapPolicy"/>), sets the OpenMP wait policy
    /// <see cref="ThreadPolicy.WaitEnvironment"/> chooses in the native environment, where libgomp reads it when
    /// it loads with libtorch, then gives libtorch every core this process may use unless OMP_NUM_THREADS or
    /// MKL_NUM_THREADS say otherwise (libtorch counts physical cores through cpuinfo, which reports 1 on some VMs).
    /// Jobs then pick their own count with <see cref="UseThreads"/>. A missing library is left for the first call
    /// (and <see cref="EnsureLoaded"/>) to report.
    /// </summary>
    internal static void ConfigureBeforeFirstCall()
    {
        foreach (var (name, value) in ThreadPolicy.WaitEnvironment(Environment.GetEnvironmentVariable)) SetNativeEnvironment(name, value);
        if (OperatingSystem.IsLinux()) ConfigureHeap();
        if (ThreadPolicy.ThreadsChosenByUser(Environment.GetEnvironmentVariable)) return;
        try
        {
            if (sdt_get_num_threads() < Environment.ProcessorCount) sdt_set_num_threads(Environment.ProcessorCount);
        }
        catch (DllNotFoundException)
        {
        }
    }

    /// <summary>
    /// Sets the intra-op thread count <see cref="ThreadPolicy.ChooseThreads"/> picks for <paramref name="demand"/> on the
    /// machine as it is now, unless the user fixed it (OMP_NUM_THREADS, MKL_NUM_THREADS); returns the count in force.
    /// </summary>
    public static int UseThreads(ThreadDemand demand)
    {
        if (!ThreadPolicy.ThreadsChosenByUser(Environment.GetEnvironmentVariable))
            NumThreads = ThreadPolicy.ChooseThreads(demand, MachineLoad.Read());
        return NumThreads;
    }

    // glibc only: another C library (musl) has no mallopt, and keeps its own policy.
    private static void ConfigureHeap()
    {
        try
        {
            foreach (var (parameter, value) in HeapPolicy.Settings(Environment.GetEnvironmentVariable)) _ = mallopt((int)parameter, value);
        }
        catch (EntryPointNotFoundException)
        {
        }
        catch (DllNotFoundException)
        {
        }
    }

    [LibraryImport("libc")]
    private static partial int mallopt(int parameter, int value);

    // .NET keeps its own copy of the environment on Unix: libgomp only sees what setenv writes.
    private static void SetNativeEnvironment(string name, string value)
    {
        Environment.SetEnvironmentVariable(name, value);
        if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS()) _ = setenv(name, value, 1);
    }

    [LibraryImport("libc", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int setenv(string name, string value, int overwrite);

    public static string TorchVersion => Marshal.PtrToStringUTF8(sdt_torch_version()) ?? "unknown";

    /// <summary>The libtorch shared object this process loaded.</summary>
    public static string TorchLibraryPath => Marshal.PtrToStringUTF8(sdt_torch_library_path()) ?? "unknown";

    /// <summary>Intra-op CPU threads (torch.get_num_threads / set_num_threads).</summary>
    public static int NumThreads
    {
        get => sdt_get_num_threads();
        set
        {
            sdt_set_num_threads(value);
            ThrowIfError();
        }
    }

    /// <summary>Whether scaled_dot_product_attention is libtorch's fused kernel (2.1+) rather than our matmul-softmax.</summary>
    public static bool HasNativeScaledDotProductAttention => sdt_has_native_sdpa() != 0;
}

/// <summary>torch.cuda: availability, devices and the caching allocator's memory figures.</summary>
public static unsafe class Cuda
{
    public static bool IsAvailable => sdt_cuda_is_available() != 0;

    public static int DeviceCount => sdt_cuda_device_count();

    /// <summary>Whether the shim was built with the CUDA runtime headers (device names, memory stats).</summary>
    public static bool HasMemoryStats => sdt_cuda_compiled() != 0;

    public static CudaDeviceInfo GetDeviceInfo(int index)
    {
        var name = stackalloc byte[256];
        long total, free;
        Check(sdt_cuda_device_info(index, name, 256, &total, &free));
        return new CudaDeviceInfo(index, Marshal.PtrToStringUTF8((IntPtr)name) ?? "", total, free);
    }

    public static CudaMemoryStats GetMemoryStats(int index = 0)
    {
        var s = stackalloc long[4];
        Check(sdt_cuda_memory_stats(index, s));
        return new CudaMemoryStats(s[0], s[1], s[2], s[3]);
    }

    public static void ResetPeakMemoryStats(int index = 0) => Check(sdt_cuda_reset_peak_memory_stats(index));

    public static void EmptyCache() => Check(sdt_cuda_empty_cache());

    public static void Synchronize(int index = 0) => Check(sdt_cuda_synchronize(index));
}

public sealed record CudaDeviceInfo(int Index, string Name, long TotalBytes, long FreeBytes);

/// <summary>Bytes held by libtorch's CUDA caching allocator (torch.cuda.memory_allocated / memory_reserved and their peaks).</summary>
public sealed record CudaMemoryStats(long AllocatedBytes, long ReservedBytes, long PeakAllocatedBytes, long PeakReservedBytes);
