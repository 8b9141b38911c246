using System.Text.Json.Nodes;
using SdAppliance.Torch.Native;
using SdAppliance.Torch.Optim;

namespace SdAppliance.Torch.Tests;

public class OptimStateTests
{
    private const int TotalSteps = 8;
    private const int SavedAt = 3;

    public static TheoryData<string> Optimizers => ["adamw_amsgrad", "adam", "sgd_nesterov", "lion", "adafactor_beta1", "adafactor_default", "prodigy", "adamw8bit", "lion8bit"];

    private static Optimizer Make(string name, Tensor[] ps) => name switch
    {
        "adamw_amsgrad" => new AdamW(ps, new AdamWOptions { Lr = 0.05, WeightDecay = 0.1, Amsgrad = true }),
        "adam" => new Adam(ps, new AdamOptions { Lr = 0.05, WeightDecay = 0.01 }),
        "sgd_nesterov" => new Sgd(ps, new SgdOptions { Lr = 0.01, Momentum = 0.9, Nesterov = true, WeightDecay = 0.01 }),
        "lion" => new Lion(ps, new LionOptions { Lr = 0.01, WeightDecay = 0.1 }),
        "adafactor_beta1" => new Adafactor(ps, new AdafactorOptions { Lr = 0.05, RelativeStep = false, Beta1 = 0.9, WeightDecay = 0.01 }),
        "adafactor_default" => new Adafactor(ps),
        "prodigy" => new Prodigy(ps, new ProdigyOptions { WeightDecay = 0.01, UseBiasCorrection = true, D0 = 1e-3 }),
        // W (12 values) has 8-bit moments, B (3) float32 ones: both kinds of state resume.
        "adamw8bit" => new AdamW8bit(ps, new AdamW8bitOptions { Lr = 0.05, WeightDecay = 0.1, MinEightBitSize = 8 }),
        "lion8bit" => new Lion8bit(ps, new Lion8bitOptions { Lr = 0.01, WeightDecay = 0.1, MinEightBitSize = 8 }),
        _ => throw new ArgumentException(name),
    };

    /// <summary>A small least-squares problem: W [3, 4] and b [3] fitted to fixed data.</summary>
    private sealed class Problem : IDisposable
    {
        private readonly Tensor x;
        private readonly Tensor y;

        public Problem(float[] w, float[] b)
        {
            var random = new Random(11);
            x = torch.Tensor(OptimReference.Values(random, 20), 5, 4);
            y = torch.Tensor(OptimReference.Values(random, 15), 5, 3);
            W = torch.Tensor(w, 3, 4).RequiresGrad_();
            B = torch.Tensor(b, 3).RequiresGrad_();
        }

        public Tensor W { get; }
        public Tensor B { get; }
        public Tensor[] Params => [W, B];

        public void Train(Optimizer opt, LrScheduler scheduler, int steps)
        {
            for (var s = 0; s < steps; s++)
            {
                using var scope = torch.NewDisposeScope();
                var diff = Functional.Linear(x, W, B) - y;
                var loss = Op.Get("aten::sum").Begin().T(diff * diff).Call();
                loss.Backward();
                opt.Step();
                scheduler.Step();
                opt.ZeroGrad();
            }
        }

        public (float[] W, float[] B) Values => (W.ToArray<float>(), B.ToArray<float>());

        public void Dispose()
        {
            foreach (var t in new[] { x, y, W, B }) t.Dispose();
        }
    }

    private static readonly float[] W0 = OptimReference.Values(new Random(5), 12);
    private static readonly float[] B0 = OptimReference.Values(new Random(6), 3);

    private static LrSchedule Schedule => LrSchedule.Linear(2, TotalSteps);

    /// <summary>Everything a run ends with: parameters, state tensor values and the JSON state (steps, lrs); SameAs compares the numbers.</summary>
    private sealed record Outcome(float[] W, float[] B, Dictionary<string, float[]> State, string Json)
    {
        public static Outcome Of(Problem problem, Optimizer opt)
        {
            using var state = opt.StateDict();
            var (w, b) = problem.Values;
            return new(w, b, state.Tensors.ToDictionary(kv => kv.Key, kv => kv.Value.Float().ToArray<float>()), state.Json.ToJsonString());
        }

        public bool SameAs(Outcome other) =>
            W.SequenceEqual(other.W) && B.SequenceEqual(other.B)
            && State.Count == other.State.Count && State.All(kv => other.State.TryGetValue(kv.Key, out var v) && v.SequenceEqual(kv.Value));
    }

    [Theory]
    [MemberData(nameof(Optimizers))]
    public void ResumeFromStateIsBitIdentical(string name)
    {
        Outcome straight;
        using (var problem = new Problem(W0, B0))
        using (var opt = Make(name, problem.Params))
        {
            problem.Train(opt, new LrScheduler(opt, Schedule), TotalSteps);
            straight = Outcome.Of(problem, opt);
        }
        Assert.NotEmpty(straight.State);

        // Interrupted run: save parameters, optimizer state (to a file) and scheduler state as a checkpoint would.
        (float[] W, float[] B) checkpoint;
        var statePath = Path.Combine(Path.GetTempPath(), $"sdapp-optim-{Guid.NewGuid():N}.safetensors");
        string savedScheduler;
        using (var problem = new Problem(W0, B0))
        using (var opt = Make(name, problem.Params))
        {
            var scheduler = new LrScheduler(opt, Schedule);
            problem.Train(opt, scheduler, SavedAt);
            checkpoint = problem.Values;
            using var state = opt.StateDict();
            state.Save(statePath);
            savedScheduler = scheduler.StateDict().ToJsonString();
        }

        // Fresh parameters from the checkpoint, a fresh optimizer and scheduler, then the saved state.
        using (var problem = new Problem(checkpoint.W, checkpoint.B))
        using (var opt = Make(name, problem.Params))
        using (var loaded = OptimizerStateDict.Load(statePath))
        {
            File.Delete(statePath);
            var scheduler = new LrScheduler(opt, Schedule);
            opt.LoadStateDict(loaded);
            scheduler.LoadStateDict(JsonNode.Parse(savedScheduler)!.AsObject());
            problem.Train(opt, scheduler, TotalSteps - SavedAt);
            var resumed = Outcome.Of(problem, opt);
            Assert.Equal(straight.W, resumed.W);
            Assert.Equal(straight.B, resumed.B);
            Assert.Equal(straight.Json, resumed.Json);
            Assert.True(straight.SameAs(resumed), "the state tensors differ");
        }

        // Control: resuming without the optimizer state does not reproduce the run.
        using (var problem = new Problem(checkpoint.W, checkpoint.B))
        using (var opt = Make(name, problem.Params))
        {
            var scheduler = new LrScheduler(opt, Schedule);
            scheduler.LoadStateDict(JsonNode.Parse(savedScheduler)!.AsObject());
            problem.Train(opt, scheduler, TotalSteps - SavedAt);
            Assert.False(straight.SameAs(Outcome.Of(problem, opt)));
        }
    }

    [Fact]
    public void StateDictNamesTensorsAndHyperparametersLikePyTorch()
    {
        using var problem = new Problem(W0, B0);
        using var opt = new AdamW(problem.Params, new AdamWOptions { Lr = 0.01, Amsgrad = true });
        problem.Train(opt, new LrScheduler(opt, LrSchedule.Constant()), 2);
        using var state = opt.StateDict();
        Assert.Equal(
            ["state.0.exp_avg", "state.0.exp_avg_sq", "state.0.max_exp_avg_sq", "state.1.exp_avg", "state.1.exp_avg_sq", "state.1.max_exp_avg_sq"],
            state.Tensors.Keys.Order(StringComparer.Ordinal));
        Assert.Equal("AdamW", (string?)state.Json["optimizer"]);
        Assert.Equal(2L, (long)state.Json["state"]!["1"]!["step"]!);
        var group = state.Json["param_groups"]![0]!;
        Assert.Equal(0.01, (double)group["lr"]!);
        Assert.Equal(0.01, (double)group["weight_decay"]!);
        Assert.True((bool)group["amsgrad"]!);
        Assert.Equal("[0,1]", group["params"]!.ToJsonString());
    }

    private static OptimizerStateDict SavedAdamW(long[] shape, int parameters = 1)
    {
        var ps = Enumerable.Range(0, parameters).Select(_ => torch.Ones(shape).RequiresGrad_()).ToArray();
        using var opt = new AdamW(ps, new AdamWOptions { Lr = 0.5 });
        foreach (var p in ps) p.Grad = torch.OnesLike(p);
        opt.Step();
        using var state = opt.StateDict();
        var copy = new OptimizerStateDict(
            state.Tensors.ToDictionary(kv => kv.Key, kv => kv.Value.Clone()),
            JsonNode.Parse(state.Json.ToJsonString())!.AsObject());
        return copy;
    }

    [Fact]
    public void LoadRefusesMismatchesWithClearErrors()
    {
        using var scope = torch.NewDisposeScope();
        using var p = torch.Ones([3, 4]).RequiresGrad_();
        using var opt = new AdamW([p], new AdamWOptions { Lr = 0.25 });

        var wrongKind = SavedAdamW([3, 4]);
        using var sgd = new Sgd([torch.Ones([3, 4]).RequiresGrad_()]);
        Assert.Contains("is for AdamW, not Sgd", Assert.Throws<ArgumentException>(() => sgd.LoadStateDict(wrongKind)).Message);

        var twoParams = SavedAdamW([3, 4], parameters: 2);
        Assert.Contains("parameter group 0 has 2 parameters in the optimizer state but 1 here",
            Assert.Throws<ArgumentException>(() => opt.LoadStateDict(twoParams)).Message);

        var transposed = SavedAdamW([4, 3]);
        var shapeError = Assert.Throws<ArgumentException>(() => opt.LoadStateDict(transposed)).Message;
        Assert.Contains("state.0.exp_avg has shape [4, 3]", shapeError);
        Assert.Contains("needs [3, 4]", shapeError);

        var twoGroups = SavedAdamW([3, 4]);
        using var other = torch.Ones([2]).RequiresGrad_();
        using var grouped = new AdamW([new ParamGroup<AdamWOptions>([torch.Ones([3, 4]).RequiresGrad_()], new()), new ParamGroup<AdamWOptions>([other], new())]);
        Assert.Contains("1 parameter groups but this optimizer has 2", Assert.Throws<ArgumentException>(() => grouped.LoadStateDict(twoGroups)).Message);

        var missing = SavedAdamW([3, 4]);
        var lacking = new OptimizerStateDict(missing.Tensors.Where(kv => kv.Key != "state.0.exp_avg_sq").ToDictionary(), missing.Json);
        Assert.Contains("lacks state.0.exp_avg_sq", Assert.Throws<ArgumentException>(() => opt.LoadStateDict(lacking)).Message);

        var extra = SavedAdamW([3, 4]);
        var withExtra = new OptimizerStateDict(
            extra.Tensors.Append(new("state.0.bogus", torch.Ones([1]))).ToDictionary(), extra.Json);
        Assert.Contains("unexpected tensor state.0.bogus", Assert.Throws<ArgumentException>(() => opt.LoadStateDict(withExtra)).Message);

        var badOptions = SavedAdamW([3, 4]);
        badOptions.Json["param_groups"]![0]!["beta2"] = 2.0;
        Assert.Contains("beta2", Assert.Throws<ArgumentException>(() => opt.LoadStateDict(badOptions)).Message);

        // Nothing was applied by the failed loads.
        Assert.Equal(0.25, opt.ParamGroups[0].Lr);
        using var empty = opt.StateDict();
        Assert.Empty(empty.Tensors);

        var good = SavedAdamW([3, 4]);
        opt.LoadStateDict(good);
        Assert.Equal(0.5, opt.ParamGroups[0].Lr);
        using var loaded = opt.StateDict();
        Assert.Equal(2, loaded.Tensors.Count);
        Assert.Equal(1L, (long)loaded.Json["state"]!["0"]!["step"]!);
    }
}
