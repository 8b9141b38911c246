namespace SdAppliance.Models.Blocks;

/// <summary>
/// The range checks a config's values pass when its file is read, before any module is built from it: a
/// zero, negative or huge width would otherwise reach the engine as an allocation of that size (or a
/// division by zero), far from the file that caused it. The upper bounds are a few times the largest
/// released model's (SDXL: 1280 channels, 20 heads, 10 transformer layers, 128 latent pixels; CLIP bigG:
/// 1280 wide, 32 layers, 49408 tokens), so no real model is refused and no typo costs gigabytes.
/// </summary>
internal sealed class ConfigChecks(string source)
{
    public const int MaxChannels = 8192;
    public const int MaxBlocks = 8;
    public const int MaxLayers = 64;
    public const int MaxHeads = 256;
    public const int MaxVocabulary = 1 << 20;
    public const int MaxSampleSize = 4096;

    /// <summary>1 ≤ <paramref name="value"/> ≤ <paramref name="max"/>.</summary>
    public ConfigChecks Count(string field, long value, long max)
    {
        if (value < 1 || value > max)
            throw Refuse(field, $"is {value}; it must be 1 to {max}");
        return this;
    }

    /// <summary>Every value 1 to <paramref name="max"/>, and at least one value.</summary>
    public ConfigChecks Counts(string field, IReadOnlyList<int> values, long max)
    {
        if (values.Count == 0)
            throw Refuse(field, "is an empty list");
        for (var i = 0; i < values.Count; i++)
            Count(values.Count == 1 ? field : $"{field}[{i}]", values[i], max);
        return this;
    }

    /// <summary>A list of at most <paramref name="max"/> values.</summary>
    public ConfigChecks Length(string field, int count, int max)
    {
        if (count > max)
            throw Refuse(field, $"has {count} values; at most {max} are allowed");
        return this;
    }

    /// <summary>A per-block setting: one value for every block, or one per block.</summary>
    public ConfigChecks PerBlock(string field, int count, int blocks)
    {
        if (count != 1 && count != blocks)
            throw Refuse(field, $"has {count} values for {blocks} blocks; give one value, or one per block");
        return this;
    }

    /// <summary>A list with exactly one value per block.</summary>
    public ConfigChecks OnePerBlock(string field, int count, int blocks)
    {
        if (count != blocks)
            throw Refuse(field, $"has {count} values for the {blocks} blocks of block_out_channels");
        return this;
    }

    /// <summary><paramref name="value"/> is a multiple of <paramref name="divisor"/> (channels split into groups or heads).</summary>
    public ConfigChecks Divides(string field, long value, string divisorField, long divisor)
    {
        if (value % divisor != 0)
            throw Refuse(field, $"is {value}, which does not split into {divisorField} = {divisor} equal parts");
        return this;
    }

    /// <summary>A finite positive number (an epsilon, a scaling factor).</summary>
    public ConfigChecks Positive(string field, double value)
    {
        if (!double.IsFinite(value) || value <= 0)
            throw Refuse(field, $"is {value.ToString(System.Globalization.CultureInfo.InvariantCulture)}; it must be a finite number above 0");
        return this;
    }

    public ModelConfigException Refuse(string field, string problem) => new(source, field, problem);
}
