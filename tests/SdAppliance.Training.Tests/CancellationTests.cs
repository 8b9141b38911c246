using SdAppliance.Models.Loading;
using SdAppliance.Training.Data;

namespace SdAppliance.Training.Tests;

/// <summary>A cancelled token stops the slow parts before a run's first step: the dataset scan, the model load, the whole start.</summary>
public sealed class CancellationTests
{
    private static readonly string TinyModel = Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sd");

    private static CancellationToken Cancelled() => new(canceled: true);

    [Fact]
    public void TheDatasetScanStopsBetweenFiles()
    {
        using var folder = new DataTestFolder();
        folder.Image("a.png", 64, 64);
        var options = new DatasetOptions { DataDir = folder.Root };
        Assert.Single(TrainingDataset.Scan(options).Items);
        Assert.ThrowsAny<OperationCanceledException>(() => TrainingDataset.Scan(options, Cancelled()));
    }

    [Fact]
    public void ModelLoadingStopsAndAStartingRunLeavesNoState()
    {
        Assert.ThrowsAny<OperationCanceledException>(() => ModelLoader.Load(TinyModel, cancellationToken: Cancelled()));

        using var folder = new DataTestFolder();
        folder.Image("data/a.png", 64, 64);
        var config = new TrainingConfig { Model = TinyModel, Data = folder.PathOf("data"), Output = folder.PathOf("run"), Resolution = 64, MaxTrainSteps = 1 };
        Assert.ThrowsAny<OperationCanceledException>(() => Trainer.Train(config, cancellationToken: Cancelled()));
        Assert.False(Directory.Exists(folder.PathOf("run/checkpoints")));
    }
}
