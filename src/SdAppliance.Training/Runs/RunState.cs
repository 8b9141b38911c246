namespace SdAppliance.Training.Runs;

/// <summary>Where a run is: what a saved training state records besides the tensors.</summary>
internal sealed class RunState
{
    public long Step { get; set; }
    public int Epoch { get; set; }
    public int BatchInEpoch { get; set; }
    public double SmoothedLoss { get; set; } = double.NaN;
    public double AccumulatedLoss { get; set; }
    public double LossScale { get; set; } = 1;
}
