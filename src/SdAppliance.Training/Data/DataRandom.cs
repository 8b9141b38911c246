namespace SdAppliance.Training.Data;

/// <summary>
/// The dataset's random numbers: SplitMix64 (Steele, Lea and Flood 2014), written out here rather than taken
/// from <see cref="System.Random"/> so that a data order saved in a training state replays identically on any .NET
/// version. Every stream is seeded by <see cref="Seed"/> from the run seed plus labels (epoch, batch, slot), so
/// any one example's choices can be recomputed without replaying the ones before it (what resume needs).
/// </summary>
internal sealed class DataRandom(ulong seed)
{
    private ulong state = seed;

    /// <summary>A seed mixed from <paramref name="parts"/>: each part goes through the SplitMix64 finaliser in turn.</summary>
    public static ulong Seed(params ReadOnlySpan<ulong> parts)
    {
        ulong h = 0x6A09E667F3BCC908UL;  // sqrt(2)'s fraction: any odd non-zero start works
        foreach (var part in parts) h = Mix(h ^ Mix(part + 0x9E3779B97F4A7C15UL));
        return h;
    }

    public ulong NextUInt64()
    {
        state += 0x9E3779B97F4A7C15UL;
        return Mix(state);
    }

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform integer in [0, <paramref name="count"/>), without modulo bias (rejection of the short tail).</summary>
    public int Next(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(count);
        ulong n = (ulong)count;
        ulong limit = ulong.MaxValue - (ulong.MaxValue % n);
        ulong x;
        do x = NextUInt64(); while (x >= limit);
        return (int)(x % n);
    }

    /// <summary>Fisher–Yates, from the end (Durstenfeld's order).</summary>
    public void Shuffle<T>(IList<T> list)
    {
        for (int i = list.Count - 1; i > 0; i--)
        {
            int j = Next(i + 1);
            (list[i], list[j]) = (list[j], list[i]);
        }
    }

    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>A stable 64-bit hash of text (FNV-1a over UTF-16 code units), for seeds and cache names that must not change between runs.</summary>
    public static ulong Hash(string text)
    {
        ulong h = 0xCBF29CE484222325UL;
        foreach (char c in text)
        {
            h ^= c;
            h *= 0x100000001B3UL;
        }
        return Mix(h);
    }
}
