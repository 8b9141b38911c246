using System.Runtime.InteropServices;

namespace SdAppliance.Torch.Tests;

public class HeapPolicyTests
{
    [Fact]
    public void LargeBlocksStayInTheHeapUnlessTheUserTunedMalloc()
    {
        Assert.Equal([(HeapPolicy.Parameter.MmapThreshold, 1 << 30), (HeapPolicy.Parameter.TrimThreshold, 1 << 30)], HeapPolicy.Settings(_ => null));
        foreach (var name in new[] { "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES" })
            Assert.Empty(HeapPolicy.Settings(n => n == name ? "1" : null));
        Assert.NotEmpty(HeapPolicy.Settings(n => n == "MALLOC_MMAP_THRESHOLD_" ? "" : null));
    }

    /// <summary>
    /// glibc maps a block above its threshold by itself (and unmaps it when freed, so that the next one arrives as fresh
    /// pages to fault in and zero); by default no block above 32 MiB is kept in the heap. With the engine's policy a
    /// 40 MiB tensor comes from the heap: glibc's count of bytes in blocks mapped by themselves (mallinfo2's hblkhd,
    /// process-wide) does not grow by it. Without the policy (a MALLOC_* variable set) it grows by the tensor's size.
    /// </summary>
    [Fact]
    public void ALargeTensorComesFromTheHeapNotAMappingOfItsOwn()
    {
        if (!OperatingSystem.IsLinux()) return;
        Engine.EnsureLoaded();
        const long Bytes = 40 << 20;
        var before = BytesMappedByThemselves();
        using var tensor = torch.Empty([Bytes], DType.UInt8);
        var grown = BytesMappedByThemselves() - before;
        Assert.True(grown < Bytes, $"a 40 MiB tensor grew the bytes in blocks mapped by themselves by {grown}");
    }

    private static long BytesMappedByThemselves() => (long)mallinfo2().Hblkhd;

    [StructLayout(LayoutKind.Sequential)]
    private struct MallInfo2
    {
        public nuint Arena, Ordblks, Smblks, Hblks, Hblkhd, Usmblks, Fsmblks, Uordblks, Fordblks, Keepcost;
    }

    [DllImport("libc")]
    private static extern MallInfo2 mallinfo2();
}
