using SdAppliance.Imaging;
using SdAppliance.Torch;

namespace SdAppliance.Training.Data;

/// <summary>
/// The masks of kohya's masked loss, one per training example at the latents' size: from a mask image of the same name in
/// <see cref="TrainingConfig.ConditioningDataDir"/> (kohya's <c>conditioning_data_dir</c>; its red channel, 0 black to 1
/// white), or from the image's own alpha channel (<see cref="TrainingConfig.AlphaMask"/>: 0 transparent to 1 opaque; an
/// image without one weighs 1). A mask goes through the image's own resize to cover the bucket, crop window and flip, and is
/// then brought to the latents' size by area interpolation, as kohya's <c>apply_masked_loss</c>. Class images (prior
/// preservation) have no mask: they weigh 1 everywhere.
/// </summary>
public sealed class LossMasks : IDisposable
{
    private readonly bool alpha;
    private readonly IReadOnlyDictionary<string, string> maskOf;
    private readonly bool cache;
    private readonly Dictionary<string, Tensor> memory = new(StringComparer.Ordinal);
    private readonly Lock gate = new();

    private LossMasks(bool alpha, IReadOnlyDictionary<string, string> maskOf, bool cache)
    {
        this.alpha = alpha;
        this.maskOf = maskOf;
        this.cache = cache;
    }

    /// <summary>
    /// The masks of a run, or null when its loss is not masked (<see cref="TrainingConfig.MasksLoss"/>). With a mask folder,
    /// every instance image needs a mask there of its size (kohya refuses a missing one too): otherwise a
    /// <see cref="TrainingConfigException"/> names the images. Masks are kept in memory when every draw of an image is the
    /// same crop (center_crop).
    /// </summary>
    public static LossMasks? ForRun(TrainingConfig config, TrainingDataset dataset)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(dataset);
        if (!config.MasksLoss()) return null;
        var maskOf = new Dictionary<string, string>(StringComparer.Ordinal);
        if (config.ConditioningDataDir is { } folder)
        {
            if (!Directory.Exists(folder))
                throw new TrainingConfigException($"conditioning_data_dir: '{folder}' is not a folder; give the folder of the masks, named as their images");
            var masks = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var file in Directory.EnumerateFiles(folder).Order(StringComparer.Ordinal))
            {
                if (!DatasetScanner.ImageExtensions.Contains(Path.GetExtension(file))) continue;
                var name = Path.GetFileNameWithoutExtension(file);
                if (!masks.TryAdd(name, file))
                    throw new TrainingConfigException(
                        $"conditioning_data_dir: '{Path.GetFileName(masks[name])}' and '{Path.GetFileName(file)}' are both masks of '{name}'; keep one");
            }
            var missing = new List<string>();
            var wrongSize = new List<string>();
            foreach (var item in dataset.Items)
            {
                if (!masks.TryGetValue(Path.GetFileNameWithoutExtension(item.Path), out var mask))
                {
                    missing.Add(Path.GetFileName(item.Path));
                    continue;
                }
                var info = ImageCodec.Identify(mask);
                if (info.Width != item.Width || info.Height != item.Height)
                    wrongSize.Add($"'{Path.GetFileName(mask)}' is {info.Width}x{info.Height}, its image '{Path.GetFileName(item.Path)}' {item.Width}x{item.Height}");
                maskOf[Path.GetFullPath(item.Path)] = mask;
            }
            if (missing.Count > 0)
                throw new TrainingConfigException(
                    $"conditioning_data_dir: no mask in '{folder}' for {missing.Count} image(s): {string.Join(", ", missing.Take(10))}{(missing.Count > 10 ? ", ..." : "")}; "
                    + "add a mask of the same name (any image extension) for each");
            if (wrongSize.Count > 0)
                throw new TrainingConfigException(
                    $"conditioning_data_dir: a mask must be its image's size: {string.Join("; ", wrongSize.Take(10))}{(wrongSize.Count > 10 ? "; ..." : "")}");
        }
        return new LossMasks(config.ConditioningDataDir is null, maskOf, dataset.LatentsCacheable);
    }

    /// <summary>The masks of <paramref name="batch"/> at <paramref name="height"/>×<paramref name="width"/>: [B, 1, h, w], float32, on the CPU.</summary>
    public Tensor Batch(IReadOnlyList<TrainingExample> batch, long height, long width)
    {
        using var scope = torch.NewDisposeScope();
        return torch.Cat([.. batch.Select(e => Get(e, height, width))]).MoveToOuterScope();
    }

    /// <summary>The mask of one example at the latents' size: [1, 1, h, w] in [0, 1], float32 on the CPU (the caller disposes).</summary>
    public Tensor Get(TrainingExample example, long height, long width)
    {
        ArgumentNullException.ThrowIfNull(example);
        var key = $"{Path.GetFullPath(example.Item.Path)}|{example.BucketWidth}x{example.BucketHeight}|{example.CropLeft},{example.CropTop}|{example.Flip}|{example.Item.IsPrior}|{width}x{height}";
        lock (gate)
        {
            if (memory.TryGetValue(key, out var kept)) return kept.Clone();
        }
        var mask = Compute(example, height, width);
        if (!cache) return mask;
        mask.DetachFromDisposeScope();
        lock (gate)
        {
            if (memory.Remove(key, out var stale)) stale.Dispose();
            memory[key] = mask;
            return mask.Clone();
        }
    }

    private Tensor Compute(TrainingExample example, long height, long width)
    {
        using var scope = torch.NewDisposeScope();
        string? source = example.Item.IsPrior ? null : alpha ? example.Item.Path : maskOf.GetValueOrDefault(Path.GetFullPath(example.Item.Path));
        if (source is null) return torch.Ones([1, 1, height, width]).MoveToOuterScope();
        var image = ImageCodec.Load(source, new ImageDecodeOptions { Channels = ChannelMode.Rgba });
        var pixels = ToTensor(image, channel: alpha ? 3 : 0);
        return Draw(pixels, example, height, width).MoveToOuterScope();
    }

    /// <summary>One channel of an RGBA image as [1, 1, H, W] in [0, 1].</summary>
    internal static Tensor ToTensor(RgbImage image, int channel)
    {
        var values = new float[image.Width * image.Height];
        for (var i = 0; i < values.Length; i++) values[i] = image.Pixels[(i * image.Channels) + channel] / 255f;
        return torch.Tensor(values, 1, 1, image.Height, image.Width);
    }

    /// <summary>
    /// A full-image mask ([1, 1, H, W]) drawn as the example's pixels are (<see cref="LatentCache.LoadPixels"/>: resized to
    /// cover the bucket, cut at the crop window, mirrored), then area-interpolated to <paramref name="height"/>×<paramref name="width"/>.
    /// </summary>
    internal static Tensor Draw(Tensor mask, TrainingExample example, long height, long width)
    {
        using var scope = torch.NewDisposeScope();
        int bucketWidth = example.BucketWidth, bucketHeight = example.BucketHeight;
        var (coverWidth, coverHeight) = AspectBuckets.CoverSize((int)mask.Size(3), (int)mask.Size(2), bucketWidth, bucketHeight);
        var resized = coverWidth == mask.Size(3) && coverHeight == mask.Size(2)
            ? mask
            : Functional.Interpolate(mask, [coverHeight, coverWidth], mode: "bicubic", alignCorners: false, antialias: true).Clamp(0, 1);
        int left = Math.Clamp(example.CropLeft, 0, coverWidth - bucketWidth);
        int top = Math.Clamp(example.CropTop, 0, coverHeight - bucketHeight);
        var cropped = resized.Narrow(2, top, bucketHeight).Narrow(3, left, bucketWidth);
        if (example.Flip) cropped = cropped.IndexSelect(3, torch.Arange(bucketWidth - 1, -1, -1));
        return Functional.Interpolate(cropped.Contiguous(), [height, width], mode: "area").MoveToOuterScope();
    }

    public void Dispose()
    {
        lock (gate)
        {
            foreach (var mask in memory.Values) mask.Dispose();
            memory.Clear();
        }
    }
}
