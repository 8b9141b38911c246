using System.Text.Json.Nodes;
using SdAppliance.Torch;
using SdAppliance.Torch.Distributed;
using SdAppliance.Training.Runs;

namespace SdAppliance.Training.Tests;

/// <summary>The fp16 loss scaler (GradScaler's rules), its saved state, and its decisions across data-parallel ranks.</summary>
public class LossScalerTests
{
    private static Tensor Parameter(params float[] grad)
    {
        var p = torch.Zeros([grad.Length]).RequiresGrad_();
        p.Grad = torch.Tensor(grad);
        return p;
    }

    private static float[] GradOf(Tensor p)
    {
        using var g = p.Grad!;
        return g.ToArray<float>();
    }

    [Fact]
    public void AnOverflowSkipsTheStepAndHalvesTheScaleAndCleanStepsInARowDoubleIt()
    {
        using var scope = torch.NewDisposeScope();
        var scaler = new LossScaler();
        Assert.False(scaler.Unscale([Parameter(1, float.PositiveInfinity)]));
        Assert.Equal(32768, scaler.Scale);

        // A power-of-two scale divides exactly.
        var p = Parameter(32768, 65536);
        Assert.True(scaler.Unscale([p]));
        Assert.Equal([1f, 2f], GradOf(p));

        // An overflow resets the count: 2000 clean steps after the last one, not 2000 in all.
        for (var i = 1; i < LossScaler.GrowthInterval - 1; i++) Assert.True(scaler.Unscale([Parameter(1)]));
        Assert.False(scaler.Unscale([Parameter(float.NaN)]));
        Assert.Equal(16384, scaler.Scale);
        for (var i = 1; i < LossScaler.GrowthInterval; i++) Assert.True(scaler.Unscale([Parameter(1)]));
        Assert.Equal(16384, scaler.Scale);
        Assert.True(scaler.Unscale([Parameter(1)]));
        Assert.Equal(32768, scaler.Scale);
        Assert.Equal(0, scaler.GrowthTracker);
    }

    [Fact]
    public void AResumedScalerGrowsAtTheStepAnUninterruptedOneDoes()
    {
        using var scope = torch.NewDisposeScope();
        var uninterrupted = new LossScaler();
        Assert.False(uninterrupted.Unscale([Parameter(float.PositiveInfinity)]));
        for (var i = 0; i < 1500; i++) uninterrupted.Unscale([Parameter(1)]);

        // Through state.json's text, as a saved training state holds it.
        var state = new RunState { Step = 1501 };
        uninterrupted.SaveTo(state);
        var saved = state.ToJson().ToJsonString();
        var resumed = new LossScaler();
        resumed.RestoreFrom(RunState.Read(JsonNode.Parse(saved)!.AsObject()));
        Assert.Equal((32768.0, 1500), (resumed.Scale, resumed.GrowthTracker));

        for (var i = 0; i < LossScaler.GrowthInterval - 1500; i++)
        {
            uninterrupted.Unscale([Parameter(1)]);
            resumed.Unscale([Parameter(1)]);
            Assert.Equal(uninterrupted.Scale, resumed.Scale);
        }
        Assert.Equal(65536, resumed.Scale);
    }

    [Fact]
    public void AStateSavedBeforeTheGrowthTrackerWasKeptResumesWithACountOfZero()
    {
        var old = RunState.Read(JsonNode.Parse("""{"step": 4, "epoch": 0, "batch_in_epoch": 4, "smoothed_loss": null, "loss_scale": 8192}""")!.AsObject());
        Assert.Equal((8192.0, 0, double.NaN), (old.LossScale, old.LossScaleGrowthTracker, old.SmoothedLoss));
    }

    /// <summary>
    /// One step of two ranks: each rank's loss is sum(w * x) times the scale, so its gradient is x times the scale, summed
    /// over the ranks by the gradient buckets during backward, then unscaled by each rank's own scaler.
    /// </summary>
    private static (bool Stepped, double Scale, float[] Grad)[] StepTwoRanks(Func<int, float[]> inputOf, LossScaler[] scalers)
    {
        var timeout = TimeSpan.FromSeconds(30);
        using var host = TcpStore.Host("127.0.0.1", 0, 2, timeout);
        var ranks = Enumerable.Range(0, 2).Select(rank => Task.Factory.StartNew(() =>
        {
            using var client = rank == 0 ? null : TcpStore.Connect("127.0.0.1", host.Port, 2, timeout);
            using var group = new ProcessGroup(client ?? host, rank, 2, ProcessGroupBackend.Gloo, timeout, "127.0.0.1");
            using var scope = torch.NewDisposeScope();
            var w = torch.Ones([2]).RequiresGrad_();
            using var buckets = new GradientBuckets(group, [w], ReduceOp.Sum);
            buckets.Prepare();
            ((w * torch.Tensor(inputOf(rank))).Sum() * scalers[rank].Scale).Backward();
            buckets.Finish();
            var stepped = scalers[rank].Unscale([w]);
            return (stepped, scalers[rank].Scale, GradOf(w));
        }, TaskCreationOptions.LongRunning)).ToArray();
        Assert.True(Task.WaitAll(ranks, TimeSpan.FromMinutes(2)), "the ranks did not finish within two minutes");
        return [.. ranks.Select(r => r.Result)];
    }

    [Fact]
    public void AnOverflowOnOneRankSkipsTheStepOnEveryRank()
    {
        var scalers = new[] { new LossScaler(), new LossScaler() };
        // Rank 1's gradient, 1e35 x 65536, passes float32's largest value; rank 0's alone would step.
        float[] Overflowing(int rank) => rank == 0 ? [1, 2] : [1e35f, 1];
        using (var scope = torch.NewDisposeScope())
            Assert.True(new LossScaler().Unscale([Parameter(65536, 131072)]));

        foreach (var (stepped, scale, _) in StepTwoRanks(Overflowing, scalers))
            Assert.Equal((false, 32768.0), (stepped, scale));

        // The next step is clean on both, and both step on the sum of their gradients (exact: the scale is a power of two).
        foreach (var (stepped, scale, grad) in StepTwoRanks(rank => [rank + 1, 0.5f], scalers))
        {
            Assert.Equal((true, 32768.0), (stepped, scale));
            Assert.Equal([3f, 1f], grad);
        }
        Assert.All(scalers, s => Assert.Equal(1, s.GrowthTracker));
    }
}
