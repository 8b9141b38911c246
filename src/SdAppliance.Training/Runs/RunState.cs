using System.Text.Json.Nodes;

namespace SdAppliance.Training.Runs;

/// <summary>Where a run is: what a saved training state records besides the tensors and generators.</summary>
internal sealed class RunState
{
    public long Step { get; set; }
    public int Epoch { get; set; }
    public int BatchInEpoch { get; set; }
    public double SmoothedLoss { get; set; } = double.NaN;
    public double AccumulatedLoss { get; set; }
    public double LossScale { get; set; } = 1;
    public int LossScaleGrowthTracker { get; set; }

    /// <summary>The fields as <c>state.json</c> holds them (a loss that is not finite as null: JSON has no NaN).</summary>
    public JsonObject ToJson() => new()
    {
        ["step"] = Step,
        ["epoch"] = Epoch,
        ["batch_in_epoch"] = BatchInEpoch,
        ["smoothed_loss"] = double.IsFinite(SmoothedLoss) ? SmoothedLoss : null,
        ["loss_scale"] = LossScale,
        ["loss_scale_growth_tracker"] = LossScaleGrowthTracker,
    };

    /// <summary>The fields of a <c>state.json</c>; the loss scaler's are absent from states saved before they were kept.</summary>
    public static RunState Read(JsonObject json) => new()
    {
        Step = json["step"]!.GetValue<long>(),
        Epoch = json["epoch"]!.GetValue<int>(),
        BatchInEpoch = json["batch_in_epoch"]!.GetValue<int>(),
        SmoothedLoss = json["smoothed_loss"]?.GetValue<double>() ?? double.NaN,
        LossScale = json["loss_scale"]?.GetValue<double>() ?? 1,
        LossScaleGrowthTracker = json["loss_scale_growth_tracker"]?.GetValue<int>() ?? 0,
    };
}
