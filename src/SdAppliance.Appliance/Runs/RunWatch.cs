using System.Globalization;
using System.Text.RegularExpressions;
using SdAppliance.Appliance.Jobs;

namespace SdAppliance.Appliance.Runs;

/// <summary>Which steps a chart shows: the whole run, or only the last ones.</summary>
public enum StepRange
{
    All,
    Last1000,
    Last100,
}

/// <summary>The loss chart: the steps of its points, the loss at each (bucket means) and the smoothed loss.</summary>
public sealed record LossChart(IReadOnlyList<long> Steps, IReadOnlyList<double> Loss, IReadOnlyList<double> Smoothed);

/// <summary>A sample image of a run: the step it shows, which sample prompt (from 0), its file name and its path in the data folder.</summary>
public sealed record RunSample(long Step, int Prompt, string Name, string Image);

/// <summary>
/// What a run page shows of a training job, built from its event stream (<see cref="JobService.EventsAsync"/>) one event
/// at a time: the loss, smoothed loss and learning-rate series for each <see cref="StepRange"/> (down-sampled to at most
/// <c>maxPoints</c> points, the smoothing an exponential moving average with TensorBoard's weight), the sample images
/// by step and prompt, the last log lines, the last step's figures and the state. It remembers the last sequence it
/// applied, so a reader that reconnects asks for the events after it and an event seen twice changes nothing.
/// </summary>
public sealed partial class RunWatch
{
    private readonly Dictionary<StepRange, (MetricSeries Loss, MetricSeries Smoothed, MetricSeries Rate)> series = [];
    private readonly ExponentialSmoothing smoothing;
    private readonly Queue<string> log = new();
    private readonly int logLines;
    private readonly SortedDictionary<(long Step, int Prompt), RunSample> samples = [];

    public RunWatch(int maxPoints = 200, double smoothingWeight = 0.9, int logLines = 200)
    {
        smoothing = new ExponentialSmoothing(smoothingWeight);
        this.logLines = logLines;
        foreach (var range in Enum.GetValues<StepRange>())
        {
            long? window = range switch { StepRange.Last100 => 100, StepRange.Last1000 => 1000, _ => null };
            series[range] = (new MetricSeries(maxPoints, window), new MetricSeries(maxPoints, window), new MetricSeries(maxPoints, window));
        }
    }

    /// <summary>The sequence of the last event applied; 0 before any (ask for the events after it).</summary>
    public long LastSequence { get; private set; }

    public JobState? State { get; private set; }

    /// <summary>The last step event: step, total, loss, it/s, ETA, memory.</summary>
    public JobEvent? LastStep { get; private set; }

    /// <summary>How many step events arrived (a resumed run's repeated steps count again).</summary>
    public long StepEvents { get; private set; }

    public IReadOnlyList<string> Log => [.. log];

    /// <summary>The samples, by step and then prompt.</summary>
    public IReadOnlyList<RunSample> Samples => [.. samples.Values];

    /// <summary>Applies <paramref name="e"/>; false when it was applied before (its sequence is not after <see cref="LastSequence"/>).</summary>
    public bool Apply(JobEvent e)
    {
        if (e.Sequence <= LastSequence) return false;
        LastSequence = e.Sequence;
        switch (e.Type)
        {
            case JobEventTypes.Step when e.Step is { } step:
                LastStep = e;
                StepEvents++;
                if (e.Loss is { } loss && double.IsFinite(loss))
                {
                    var smoothed = smoothing.Add(loss);
                    foreach (var (l, s, _) in series.Values)
                    {
                        l.Add(step, loss);
                        s.Add(step, smoothed);
                    }
                }
                if (e.LearningRate is { } rate)
                    foreach (var (_, _, r) in series.Values) r.Add(step, rate);
                break;
            case JobEventTypes.Image when e.Image is { } image:
                var name = Path.GetFileName(image);
                if (SampleName().Match(name) is { Success: true } m)
                {
                    var key = (long.Parse(m.Groups[1].ValueSpan, CultureInfo.InvariantCulture), int.Parse(m.Groups[2].ValueSpan, CultureInfo.InvariantCulture));
                    samples[key] = new RunSample(key.Item1, key.Item2, name, image);
                }
                break;
            case JobEventTypes.State when e.State is { } state:
                State = state;
                AddLog(e, e.Message is null ? $"{Name(state)}" : $"{Name(state)}: {e.Message}");
                break;
            case JobEventTypes.Log when e.Message is { } message:
                AddLog(e, message);
                break;
        }
        return true;
    }

    /// <summary>The loss chart over <paramref name="range"/>; with <paramref name="log10"/> the values' base-10 logarithms.</summary>
    public LossChart Loss(StepRange range, bool log10)
    {
        var (l, s, _) = series[range];
        var smoothed = s.Points(log10).ToDictionary(p => p.Step, p => p.Value);
        var steps = new List<long>();
        var loss = new List<double>();
        var smooth = new List<double>();
        foreach (var p in l.Points(log10))
        {
            if (!smoothed.TryGetValue(p.Step, out var v)) continue;
            steps.Add(p.Step);
            loss.Add(p.Value);
            smooth.Add(v);
        }
        return new LossChart(steps, loss, smooth);
    }

    public IReadOnlyList<MetricPoint> LearningRate(StepRange range, bool log10) => series[range].Rate.Points(log10);

    private void AddLog(JobEvent e, string line)
    {
        log.Enqueue($"{e.TimeUtc.ToString("HH:mm:ss", CultureInfo.InvariantCulture)}  {line}");
        while (log.Count > logLines) log.Dequeue();
    }

    private static string Name(JobState state) => state.ToString().ToLowerInvariant();

    [GeneratedRegex(@"^step-(\d+)-(\d+)\.png$", RegexOptions.CultureInvariant)]
    private static partial Regex SampleName();
}
