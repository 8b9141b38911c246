namespace SdAppliance.Appliance.Storage;

/// <summary>How much one upload may bring; refusals name the limit.</summary>
public sealed class StorageLimits
{
    /// <summary>One model, LoRA, embedding or hypernetwork file (SDXL checkpoints are about 7 GB).</summary>
    public long MaxModelBytes { get; init; } = 16L << 30;

    /// <summary>One dataset image.</summary>
    public long MaxImageBytes { get; init; } = 50L << 20;

    /// <summary>One dataset image's pixels (a 8192x8192 image).</summary>
    public long MaxImagePixels { get; init; } = 8192L * 8192;

    /// <summary>Images in one upload request.</summary>
    public int MaxImagesPerUpload { get; init; } = 1000;

    /// <summary>Images in one dataset.</summary>
    public int MaxImagesPerDataset { get; init; } = 20_000;
}
