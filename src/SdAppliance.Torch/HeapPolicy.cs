namespace SdAppliance.Torch;

/// <summary>
/// How glibc's malloc, which libtorch's CPU allocator calls for every tensor, treats large blocks. By default it maps
/// each block above its threshold (128 KiB, rising to the size of the last such block freed, at most 32 MiB) with an
/// mmap of its own and unmaps it when freed, and hands freed memory at the top of the heap back to the system: every
/// large activation of a step then arrives as fresh pages that the kernel faults in and zeroes one by one. A LoRA step
/// of bench-vs-torch (a quarter-width SD 1.5 UNet at 256²) allocates and frees some thirty 32 MiB attention score
/// matrices; with large blocks kept in the heap the step took half the time on a 2-core machine (the same setting given
/// to a PyTorch process cut its step by a fifth to a half). The heap keeps up to <see cref="TrimThreshold"/> of freed
/// memory for the next step, as a caching allocator does; a block above <see cref="MmapThreshold"/> is still mapped
/// alone. A thread other than the process's first allocates from an arena whose heaps hold at most 64 MiB: a block
/// that fills a heap by itself is still unmapped there when freed.
/// </summary>
public static class HeapPolicy
{
    /// <summary>glibc's mallopt parameter numbers (malloc.h).</summary>
    public enum Parameter
    {
        TrimThreshold = -1,
        MmapThreshold = -3,
    }

    /// <summary>Blocks up to this size come from the heap (an SD 1.5 batch of two at 512² has 512 MiB score matrices).</summary>
    public const int MmapThreshold = 1 << 30;

    /// <summary>Freed memory the heap keeps at its top before returning the rest to the system.</summary>
    public const int TrimThreshold = 1 << 30;

    /// <summary>
    /// The mallopt settings for the process, given its environment: none where the user tuned malloc already
    /// (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_ or GLIBC_TUNABLES, which glibc read at start).
    /// </summary>
    public static IReadOnlyList<(Parameter Parameter, int Value)> Settings(Func<string, string?> environment)
    {
        string[] userTuning = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES"];
        if (userTuning.Any(name => environment(name) is { Length: > 0 })) return [];
        return [(Parameter.MmapThreshold, MmapThreshold), (Parameter.TrimThreshold, TrimThreshold)];
    }
}
