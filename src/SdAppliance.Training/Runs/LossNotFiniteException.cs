using SdAppliance.Formats;

namespace SdAppliance.Training.Runs;

/// <summary>
/// The loss became NaN or infinite and the run was stopped there (<c>stop_on_nan</c>, on by default): the
/// weights are no longer usable, so no checkpoint or result is written from them; the checkpoints saved
/// before stay as they were. The usual causes are a learning rate too high for the method or fp16 overflow.
/// </summary>
public sealed class LossNotFiniteException : UserInputException
{
    public LossNotFiniteException(long step, double loss)
        : base("stop_on_nan", $"loss became {(double.IsNaN(loss) ? "NaN" : "infinite")} at step {step}; the run was stopped and the checkpoints saved before it are kept",
            "lower learning_rate (or use mixed_precision bf16 or no), then resume from the last checkpoint; set stop_on_nan to false to train on regardless")
    {
        Step = step;
    }

    /// <summary>The optimizer step whose loss was not finite.</summary>
    public long Step { get; }
}
