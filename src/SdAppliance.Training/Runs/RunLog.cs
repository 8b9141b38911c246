using System.Text.Json;

namespace SdAppliance.Training.Runs;

/// <summary>What every optimizer step reports (and what log.jsonl and TensorBoard record).</summary>
/// <param name="Epoch">The epoch the step's last batch belongs to, from 1 (kohya's count).</param>
/// <param name="MaxEpochs">The epochs the run goes through (<see cref="TrainingConfig.Epochs"/>).</param>
public sealed record TrainingEvent(
    long Step,
    long MaxSteps,
    int Epoch,
    int MaxEpochs,
    double Loss,
    double SmoothedLoss,
    double LearningRate,
    double ItemsPerSecond,
    TimeSpan Eta,
    long MemoryBytes);

/// <summary>The run's step log: one JSON object per line in <c>log.jsonl</c>, and TensorBoard scalars.</summary>
public sealed class RunLog : IDisposable
{
    // A diverged run's loss is NaN: written as null, never an exception that ends the run (FiniteOrNullConverter).
    private static readonly JsonSerializerOptions Json = new() { Converters = { new FiniteOrNullConverter() } };

    private readonly StreamWriter jsonl;
    private readonly TensorBoardWriter tensorBoard;

    public RunLog(string runFolder)
    {
        jsonl = new StreamWriter(new FileStream(new RunFolder(runFolder).LogFile, FileMode.Append, FileAccess.Write, FileShare.Read));
        tensorBoard = new TensorBoardWriter(Path.Combine(runFolder, "tensorboard"));
    }

    public void Write(TrainingEvent e)
    {
        jsonl.WriteLine(JsonSerializer.Serialize(new
        {
            step = e.Step, max_steps = e.MaxSteps, epoch = e.Epoch, max_epochs = e.MaxEpochs, loss = e.Loss, smoothed_loss = e.SmoothedLoss, lr = e.LearningRate,
            it_per_s = e.ItemsPerSecond, eta_s = Math.Round(e.Eta.TotalSeconds, 1), memory_bytes = e.MemoryBytes,
            time = DateTimeOffset.UtcNow.ToString("O"),
        }, Json));
        // A line a step, readable as it comes (tail -f; the appliance follows a run of several ranks through it).
        jsonl.Flush();
        tensorBoard.Scalar("loss", e.Loss, e.Step);
        tensorBoard.Scalar("loss/smoothed", e.SmoothedLoss, e.Step);
        tensorBoard.Scalar("lr", e.LearningRate, e.Step);
    }

    public void Flush()
    {
        jsonl.Flush();
        tensorBoard.Flush();
    }

    public void Dispose()
    {
        jsonl.Dispose();
        tensorBoard.Dispose();
    }
}
