using System.Text.Json.Nodes;
using SdAppliance.Torch.Optim;

namespace SdAppliance.Torch.Tests;

public class LrScheduleTests
{
    // Warmup 10, training 110: the decay spans exactly 100 steps, so progress = (step - 10) / 100.
    private const int Warmup = 10;
    private const int Training = 110;

    // The multipliers are double arithmetic on small integers and one cos/pow: exact to ~1e-15.
    private const double Tolerance = 1e-12;

    private static void AssertMultipliers(LrSchedule schedule, params (long Step, double Expected)[] points)
    {
        foreach (var (step, expected) in points)
            Assert.True(Math.Abs(schedule.Multiplier(step) - expected) <= Tolerance,
                $"{schedule.Name} at step {step}: expected {expected:R}, got {schedule.Multiplier(step):R}");
    }

    [Fact]
    public void Constant() =>
        AssertMultipliers(LrSchedule.Create("constant", Warmup, Training), (0, 1), (9, 1), (10, 1), (60, 1), (110, 1), (500, 1));

    [Fact]
    public void ConstantWithWarmup() =>
        AssertMultipliers(LrSchedule.Create("constant_with_warmup", Warmup), (0, 0), (1, 0.1), (9, 0.9), (10, 1), (60, 1), (110, 1), (500, 1));

    [Fact]
    public void Linear() =>
        // After warmup: (110 - step) / 100, floored at 0.
        AssertMultipliers(LrSchedule.Create("linear", Warmup, Training), (0, 0), (9, 0.9), (10, 1), (60, 0.5), (85, 0.25), (110, 0), (200, 0));

    [Fact]
    public void LinearWithoutWarmupStartsAtOne() =>
        AssertMultipliers(LrSchedule.Create("linear", 0, 100), (0, 1), (50, 0.5), (100, 0));

    [Fact]
    public void Cosine() =>
        // 0.5 (1 + cos(π progress)): 1 at the start, 0.5 halfway, 0 at the end, and (as in diffusers)
        // rising again past the end: progress 1.5 gives 0.5 (1 + cos 1.5π) = 0.5.
        AssertMultipliers(LrSchedule.Create("cosine", Warmup, Training, numCycles: 3),
            (0, 0), (9, 0.9), (10, 1), (35, 0.5 + Math.Sqrt(2) / 4), (60, 0.5), (110, 0), (160, 0.5));

    [Fact]
    public void CosineWithRestarts() =>
        // Two cycles: 0.5 (1 + cos(π ((2 progress) mod 1))), restarting at progress 0.5; 0 from the end on.
        AssertMultipliers(LrSchedule.Create("cosine_with_restarts", Warmup, Training, numCycles: 2),
            (0, 0), (9, 0.9), (10, 1), (35, 0.5), (59, 0.5 * (1 + Math.Cos(0.98 * Math.PI))), (60, 1), (85, 0.5), (110, 0), (200, 0));

    [Fact]
    public void Polynomial() =>
        // lr_init 1e-3, lr_end 1e-7, power 2: ((1e-3 - 1e-7) r² + 1e-7) / 1e-3 with r = 1 - progress;
        // halfway r = 0.5 gives (2.49975e-4 + 1e-7) / 1e-3 = 0.250075; past the end lr_end / lr_init.
        AssertMultipliers(LrSchedule.Create("polynomial", Warmup, Training, power: 2, initialLr: 1e-3),
            (0, 0), (9, 0.9), (10, 1), (60, 0.250075), (110, 1e-4), (111, 1e-4), (500, 1e-4));

    [Fact]
    public void PiecewiseConstant() =>
        AssertMultipliers(LrSchedule.Create("piecewise_constant", stepRules: "1:10,0.1:20,0.01"),
            (0, 1), (9, 1), (10, 0.1), (19, 0.1), (20, 0.01), (1000, 0.01));

    [Fact]
    public void ErrorsNameWhatIsMissing()
    {
        var unknown = Assert.Throws<ArgumentException>(() => LrSchedule.Create("cosine_annealing", 1, 10)).Message;
        foreach (var name in new[] { "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "piecewise_constant" })
            Assert.Contains(name, unknown);
        Assert.Contains("warmupSteps", Assert.Throws<ArgumentException>(() => LrSchedule.Create("linear")).Message);
        Assert.Contains("trainingSteps", Assert.Throws<ArgumentException>(() => LrSchedule.Create("cosine", 10)).Message);
        Assert.Contains("initial lr", Assert.Throws<ArgumentException>(() => LrSchedule.Create("polynomial", 1, 10)).Message);
        Assert.Contains("lr_end", Assert.Throws<ArgumentException>(() => LrSchedule.Create("polynomial", 1, 10, initialLr: 1e-8)).Message);
        Assert.Contains("bad step rule", Assert.Throws<ArgumentException>(() => LrSchedule.Create("piecewise_constant", stepRules: "1-10,0.1")).Message);
    }

    [Fact]
    public void SchedulerSetsEachGroupsLrLikeLambdaLR()
    {
        using var scope = torch.NewDisposeScope();
        var a = torch.Zeros([1]).RequiresGrad_();
        var b = torch.Zeros([1]).RequiresGrad_();
        using var opt = new AdamW([new ParamGroup<AdamWOptions>([a], new() { Lr = 1e-3 }), new ParamGroup<AdamWOptions>([b], new() { Lr = 1e-2 })]);
        // linear, warmup 2, 6 steps: multipliers 0, 0.5, 1, 0.75, 0.5, ...
        var scheduler = new LrScheduler(opt, "linear", warmupSteps: 2, trainingSteps: 6);
        Assert.Equal([0.0, 0.0], opt.ParamGroups.Select(g => g.Lr));
        scheduler.Step();
        Assert.Equal(1, scheduler.LastEpoch);
        Assert.Equal([5e-4, 5e-3], opt.ParamGroups.Select(g => g.Lr));
        scheduler.Step();
        scheduler.Step();
        Assert.Equal([1e-3 * 0.75, 1e-2 * 0.75], opt.ParamGroups.Select(g => g.Lr));
        Assert.Equal([1e-3 * 0.75, 1e-2 * 0.75], scheduler.LastLr);

        var saved = JsonNode.Parse(scheduler.StateDict().ToJsonString())!.AsObject();
        using var opt2 = new AdamW([new ParamGroup<AdamWOptions>([a], new() { Lr = 7 }), new ParamGroup<AdamWOptions>([b], new() { Lr = 7 })]);
        var resumed = new LrScheduler(opt2, "linear", warmupSteps: 2, trainingSteps: 6);
        resumed.LoadStateDict(saved);
        Assert.Equal(3, resumed.LastEpoch);
        Assert.Equal([1e-3, 1e-2], resumed.BaseLrs);
        Assert.Equal([1e-3 * 0.75, 1e-2 * 0.75], opt2.ParamGroups.Select(g => g.Lr));
        resumed.Step();
        Assert.Equal([1e-3 * 0.5, 1e-2 * 0.5], opt2.ParamGroups.Select(g => g.Lr));
    }

    [Fact]
    public void PolynomialSchedulerDividesByTheOptimizersDefaultLr()
    {
        using var scope = torch.NewDisposeScope();
        var p = torch.Zeros([1]).RequiresGrad_();
        using var opt = new Sgd([p], new SgdOptions { Lr = 0.1 });
        var scheduler = new LrScheduler(opt, "polynomial", warmupSteps: 0, trainingSteps: 4, power: 1);
        for (var i = 0; i < 4; i++) scheduler.Step();
        // At the end the lr is lr_end = 1e-7 (0.1 × 1e-7 / 0.1).
        Assert.Equal(1e-7, opt.ParamGroups[0].Lr, 1e-18);
    }
}
