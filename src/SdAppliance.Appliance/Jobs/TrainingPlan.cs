using SdAppliance.Training;

namespace SdAppliance.Appliance.Jobs;

/// <summary>
/// What a run will do before it starts: its dataset's images, the examples an epoch draws (each image times its kohya
/// repeats), the batches of an epoch, the optimizer steps of an epoch (batches over gradient accumulation), the epochs
/// the trainer goes through to reach <see cref="TotalSteps"/>, and how long that may take.
/// </summary>
public sealed record TrainingPlan(
    int Images, int ExamplesPerEpoch, int BatchesPerEpoch, double StepsPerEpoch, int Epochs, int TotalSteps, int SkippedFiles, TrainingTimeEstimate Estimate)
{
    /// <summary>The trainer's count (<see cref="TrainingConfig.TotalSteps"/>, <see cref="TrainingConfig.Epochs"/>).</summary>
    public static TrainingPlan Of(int images, int examplesPerEpoch, int batchesPerEpoch, int skippedFiles, TrainingConfig config, TrainingTimeEstimate estimate)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchesPerEpoch);
        return new TrainingPlan(images, examplesPerEpoch, batchesPerEpoch, (double)batchesPerEpoch / config.GradientAccumulationSteps,
            config.Epochs(batchesPerEpoch), config.TotalSteps(batchesPerEpoch), skippedFiles, estimate);
    }
}

/// <summary>
/// How long a run may take: the optimizer steps per second measured on the device (<see cref="ItPerSecond"/>, null when
/// nothing was measured), the time for the run's steps, and what the figure is based on, in words.
/// </summary>
public sealed record TrainingTimeEstimate(double? ItPerSecond, TimeSpan? Duration, string Basis)
{
    public bool Known => ItPerSecond is not null;
}

/// <summary>A finished training run on a device, with the speed its last step reported (its steps per second over its session).</summary>
public sealed record MeasuredRun(string Device, DateTime FinishedUtc, TrainingConfig Config, double ItPerSecond);

/// <summary>
/// The time a planned run may take on this device, from the speed of earlier runs there: a run with the same settings
/// that drive speed (method, model, resolution, batch size, accumulation, precision, gradient checkpointing, text
/// encoder, bucketing) gives its speed as it is; otherwise the newest run's is scaled by the work per step (pixels ×
/// batch × accumulation), which is rough and says so; with no run measured the time is unknown until the first steps.
/// </summary>
public static class TrainingEstimates
{
    public const string Unknown = "unknown until the first steps: no run has been measured on this device yet";

    public static TrainingTimeEstimate Estimate(TrainingConfig planned, int steps, IEnumerable<MeasuredRun> measured)
    {
        ArgumentNullException.ThrowIfNull(planned);
        ArgumentNullException.ThrowIfNull(measured);
        var runs = measured.Where(r => r.ItPerSecond > 0 && double.IsFinite(r.ItPerSecond)).OrderByDescending(r => r.FinishedUtc).ToList();
        if (runs.FirstOrDefault(r => SameSpeed(r.Config, planned)) is { } same)
            return Of(same.ItPerSecond, steps, $"measured on {same.Device} by a run with these settings ({same.ItPerSecond:0.###} it/s)");
        if (runs.FirstOrDefault() is not { } newest) return new TrainingTimeEstimate(null, null, Unknown);
        var rate = newest.ItPerSecond * Work(newest.Config) / Work(planned);
        var c = newest.Config;
        return Of(rate, steps,
            $"rough: scaled from a {c.Method} run on {newest.Device} at {c.Resolution} px, batch {c.TrainBatchSize} ({newest.ItPerSecond:0.###} it/s); the run page shows the real figure");
    }

    private static TrainingTimeEstimate Of(double rate, int steps, string basis) =>
        new(rate, TimeSpan.FromSeconds(Math.Min(steps / rate, TimeSpan.MaxValue.TotalSeconds / 2)), basis);

    private static double Work(TrainingConfig c) => (double)c.Resolution * c.Resolution * c.TrainBatchSize * c.GradientAccumulationSteps;

    private static bool SameSpeed(TrainingConfig a, TrainingConfig b) =>
        a.Method == b.Method && a.Model == b.Model && a.Resolution == b.Resolution && a.TrainBatchSize == b.TrainBatchSize
        && a.GradientAccumulationSteps == b.GradientAccumulationSteps && a.MixedPrecision == b.MixedPrecision
        && a.GradientCheckpointing == b.GradientCheckpointing && a.TrainTextEncoder == b.TrainTextEncoder && a.EnableBucket == b.EnableBucket;
}
