namespace SdAppliance.Appliance.Runs;

/// <summary>One point of a chart: the last step of its bucket and the mean of the bucket's values.</summary>
public readonly record struct MetricPoint(long Step, double Value);

/// <summary>
/// A training metric (loss, learning rate) as a chart shows it: at most <see cref="MaxPoints"/> points, however long the
/// run, kept incrementally as steps arrive. Steps are grouped into buckets of <see cref="BucketSteps"/> consecutive
/// steps (aligned on multiples of it), each shown as the mean of its values at its last step. Without a window the
/// buckets double in width (neighbours merged) whenever there would be too many; with a window of the last N steps their
/// width is fixed (N / (MaxPoints − 1), rounded up) and buckets that end before the window are dropped. Values that are
/// not finite (a NaN loss) are left out. A step at or before the last one (a run resumed from an earlier saved state)
/// drops the buckets from its own on, so the series follows the run as it continues.
/// </summary>
public sealed class MetricSeries
{
    private readonly List<Bucket> buckets = [];
    private long lastStep = long.MinValue;

    public MetricSeries(int maxPoints, long? window = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxPoints, 2);
        if (window is { } w) ArgumentOutOfRangeException.ThrowIfLessThan(w, 1);
        MaxPoints = maxPoints;
        Window = window;
        BucketSteps = window is { } steps ? Math.Max(1, (steps + maxPoints - 2) / (maxPoints - 1)) : 1;
    }

    public int MaxPoints { get; }

    /// <summary>Only the last this many steps, or null: the whole run.</summary>
    public long? Window { get; }

    /// <summary>How many consecutive steps one point stands for now.</summary>
    public long BucketSteps { get; private set; }

    public int Count => buckets.Count;

    public void Add(long step, double value)
    {
        if (!double.IsFinite(value)) return;
        if (step <= lastStep) Rewind(step);
        lastStep = step;
        var index = Math.DivRem(step, BucketSteps).Quotient;
        if (buckets.Count > 0 && buckets[^1].Index == index)
            buckets[^1] = buckets[^1].With(step, value);
        else
            buckets.Add(new Bucket(index, value, 1, step));

        if (Window is { } window)
        {
            var first = step - window + 1;
            var old = 0;
            while (old < buckets.Count && (buckets[old].Index + 1) * BucketSteps - 1 < first) old++;
            buckets.RemoveRange(0, old);
        }
        else
        {
            while (buckets.Count > MaxPoints) Widen();
        }
    }

    /// <summary>The points in step order; with <paramref name="log10"/> their base-10 logarithms, leaving out values that are not positive.</summary>
    public IReadOnlyList<MetricPoint> Points(bool log10 = false)
    {
        var points = new List<MetricPoint>(buckets.Count);
        foreach (var b in buckets)
        {
            var mean = b.Sum / b.Count;
            if (!log10) points.Add(new MetricPoint(b.LastStep, mean));
            else if (mean > 0) points.Add(new MetricPoint(b.LastStep, Math.Log10(mean)));
        }
        return points;
    }

    private void Widen()
    {
        BucketSteps *= 2;
        var merged = new List<Bucket>(buckets.Count / 2 + 1);
        foreach (var b in buckets)
        {
            var index = b.Index / 2;
            if (merged.Count > 0 && merged[^1].Index == index)
                merged[^1] = new Bucket(index, merged[^1].Sum + b.Sum, merged[^1].Count + b.Count, b.LastStep);
            else
                merged.Add(b with { Index = index });
        }
        buckets.Clear();
        buckets.AddRange(merged);
    }

    private void Rewind(long step)
    {
        var index = Math.DivRem(step, BucketSteps).Quotient;
        buckets.RemoveAll(b => b.Index >= index);
    }

    private readonly record struct Bucket(long Index, double Sum, long Count, long LastStep)
    {
        public Bucket With(long step, double value) => new(Index, Sum + value, Count + 1, step);
    }
}

/// <summary>
/// An exponential moving average as TensorBoard's smoothing draws it: <c>s = w·s + (1 − w)·v</c>, divided by
/// <c>1 − wⁿ</c> after n values so the first ones are not pulled towards zero (the first value is itself). Values that
/// are not finite are skipped.
/// </summary>
public sealed class ExponentialSmoothing
{
    private double accumulated;
    private double weightPower = 1;

    public ExponentialSmoothing(double weight)
    {
        if (weight is < 0 or >= 1 || double.IsNaN(weight))
            throw new ArgumentOutOfRangeException(nameof(weight), weight, "the smoothing weight must be at least 0 and below 1");
        Weight = weight;
    }

    public double Weight { get; }

    /// <summary>The smoothed value so far; NaN before the first finite value.</summary>
    public double Value { get; private set; } = double.NaN;

    public double Add(double value)
    {
        if (!double.IsFinite(value)) return Value;
        accumulated = Weight * accumulated + (1 - Weight) * value;
        weightPower *= Weight;
        Value = accumulated / (1 - weightPower);
        return Value;
    }
}

/// <summary>
/// Maps a chart's values onto 0..100 and back, for a chart whose axis ticks are at least 1 apart (MudChart's): a loss of
/// 0.02 or a learning rate of 1e-4 fills the chart's height, and the axis labels name the real values. The range is
/// the values' own with 5% to spare either side (a flat series gets ±10% of its value, or ±1 at 0).
/// </summary>
public sealed record ChartScale(double Min, double Max)
{
    public const double Height = 100;

    public static ChartScale Of(IEnumerable<double> values)
    {
        double min = double.PositiveInfinity, max = double.NegativeInfinity;
        foreach (var v in values)
        {
            if (!double.IsFinite(v)) continue;
            min = Math.Min(min, v);
            max = Math.Max(max, v);
        }
        if (min > max) return new ChartScale(0, 1);
        if (min == max)
        {
            var spread = min == 0 ? 1 : Math.Abs(min) * 0.1;
            return new ChartScale(min - spread, max + spread);
        }
        var pad = (max - min) * 0.05;
        return new ChartScale(min - pad, max + pad);
    }

    /// <summary>A value as the chart draws it, 0..<see cref="Height"/>.</summary>
    public double ToChart(double value) => (value - Min) / (Max - Min) * Height;

    /// <summary>A chart position as the value it stands for (for the axis labels).</summary>
    public double FromChart(double position) => Min + position / Height * (Max - Min);
}
