namespace SdAppliance.Training.Data;

/// <summary>
/// Aspect-ratio buckets as kohya's sd-scripts make them (<c>model_util.make_bucket_resolutions</c> and
/// <c>BucketManager.select_bucket</c> without <c>bucket_no_upscale</c>): every bucket holds at most
/// resolution² pixels, sides are multiples of the step, and an image goes to the bucket whose aspect ratio is
/// nearest its own, then is scaled to cover that bucket and cropped.
/// </summary>
public static class AspectBuckets
{
    /// <summary>
    /// kohya's bucket list: the square of side ⌊√area / steps⌋·steps, and for each width from
    /// <paramref name="minSize"/> to <paramref name="maxSize"/> in steps, the height
    /// min(max, ⌊⌊area / width⌋ / steps⌋·steps) when it is at least the minimum, in both orientations;
    /// distinct, sorted by (width, height).
    /// </summary>
    public static IReadOnlyList<(int Width, int Height)> MakeBucketResolutions(int maxWidth, int maxHeight, int minSize = 256, int maxSize = 1024, int steps = 64)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(steps);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(minSize);
        long maxArea = (long)maxWidth * maxHeight;
        var resos = new SortedSet<(int Width, int Height)>();
        int square = (int)(Math.Floor(Math.Sqrt(maxArea)) / steps) * steps;
        resos.Add((square, square));
        for (int width = minSize; width <= maxSize; width += steps)
        {
            int height = (int)Math.Min(maxSize, maxArea / width / steps * steps);
            if (height < minSize) continue;
            resos.Add((width, height));
            resos.Add((height, width));
        }
        return [.. resos];
    }

    /// <summary>
    /// The bucket for an image: its own size when that is a bucket, otherwise the bucket with the smallest
    /// |bucket aspect − image aspect| (the first in list order on a tie, as numpy's argmin).
    /// </summary>
    public static (int Width, int Height) Select(IReadOnlyList<(int Width, int Height)> buckets, int imageWidth, int imageHeight)
    {
        if (buckets.Count == 0) throw new ArgumentException("no buckets", nameof(buckets));
        foreach (var b in buckets)
            if (b.Width == imageWidth && b.Height == imageHeight) return b;
        double aspect = (double)imageWidth / imageHeight;
        int best = 0;
        double bestError = double.PositiveInfinity;
        for (int i = 0; i < buckets.Count; i++)
        {
            double error = Math.Abs(((double)buckets[i].Width / buckets[i].Height) - aspect);
            if (error < bestError)
            {
                bestError = error;
                best = i;
            }
        }
        return buckets[best];
    }

    /// <summary>
    /// The size an image is resized to so it covers the bucket (kohya's <c>resized_size</c>): a wider image is
    /// scaled to the bucket's height, otherwise to its width, each side rounded half up; never below the bucket.
    /// </summary>
    public static (int Width, int Height) CoverSize(int imageWidth, int imageHeight, int bucketWidth, int bucketHeight)
    {
        double aspect = (double)imageWidth / imageHeight;
        double scale = aspect > (double)bucketWidth / bucketHeight ? (double)bucketHeight / imageHeight : (double)bucketWidth / imageWidth;
        int width = (int)((imageWidth * scale) + 0.5);
        int height = (int)((imageHeight * scale) + 0.5);
        return (Math.Max(width, bucketWidth), Math.Max(height, bucketHeight));
    }
}
