using SdAppliance.Torch.Optim;
using static SdAppliance.Torch.Tests.OptimReference;

namespace SdAppliance.Torch.Tests;

public class OptimizerTests
{
    // Parameters are O(1) float32 (ulp 1.2e-7) and every step rounds a handful of float32
    // operations into them; over 6 steps that stays well under 2e-6, while a wrong formula
    // (bias correction, coupled vs decoupled decay, dampening...) moves them by >= 1e-4.
    private const double Tolerance = 2e-6;
    private const int Steps = 6;

    private static readonly long[][] VectorShapes = [[5]];

    /// <summary>Runs <paramref name="make"/>'s optimizer over float32 parameters, each step in its own dispose scope.</summary>
    private static float[][] Run(Func<Tensor[], Optimizer> make, float[][] init, long[][] shapes, float[][][] grads)
    {
        var ps = init.Select((v, i) => torch.Tensor(v, shapes[i]).RequiresGrad_()).ToArray();
        try
        {
            using var opt = make(ps);
            foreach (var stepGrads in grads)
            {
                // The optimizer's state must outlive the caller's per-step scope.
                using var scope = torch.NewDisposeScope();
                for (var i = 0; i < ps.Length; i++) ps[i].Grad = torch.Tensor(stepGrads[i], shapes[i]);
                opt.Step();
                opt.ZeroGrad();
                Assert.All(ps, p => Assert.Null(p.Grad));
            }
            return ps.Select(p => p.ToArray<float>()).ToArray();
        }
        finally
        {
            foreach (var p in ps) p.Dispose();
        }
    }

    private static (float[][] Init, float[][][] Grads) Data(int seed, params int[] sizes)
    {
        var random = new Random(seed);
        var init = sizes.Select(n => Values(random, n)).ToArray();
        var grads = Enumerable.Range(0, Steps).Select(_ => sizes.Select(n => Values(random, n)).ToArray()).ToArray();
        return (init, grads);
    }

    private static double[][] GradsOf(float[][][] grads, int param) => grads.Select(s => ToDouble(s[param])).ToArray();

    private static void AssertClose(double[] expected, float[] actual, double tolerance = Tolerance)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (var i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tolerance, $"element {i}: expected {expected[i]:R}, got {actual[i]:R}");
    }

    [Theory]
    [InlineData(0.0, false)]
    [InlineData(0.01, false)]
    [InlineData(0.1, true)]
    public void AdamWMatchesReference(double weightDecay, bool amsgrad)
    {
        var (init, grads) = Data(1, 5);
        var options = new AdamWOptions { Lr = 0.01, Beta1 = 0.8, Beta2 = 0.95, Eps = 1e-8, WeightDecay = weightDecay, Amsgrad = amsgrad };
        var actual = Run(ps => new AdamW(ps, options), init, VectorShapes, grads);
        var expected = AdamRef(ToDouble(init[0]), GradsOf(grads, 0), 0.01, 0.8, 0.95, 1e-8, weightDecay, decoupled: true, amsgrad);
        AssertClose(expected, actual[0]);
    }

    [Theory]
    [InlineData(0.0, false)]
    [InlineData(0.1, false)]
    [InlineData(0.1, true)]
    public void AdamMatchesReference(double weightDecay, bool amsgrad)
    {
        var (init, grads) = Data(2, 5);
        var options = new AdamOptions { Lr = 0.01, Beta1 = 0.9, Beta2 = 0.99, Eps = 1e-6, WeightDecay = weightDecay, Amsgrad = amsgrad };
        var actual = Run(ps => new Adam(ps, options), init, VectorShapes, grads);
        var expected = AdamRef(ToDouble(init[0]), GradsOf(grads, 0), 0.01, 0.9, 0.99, 1e-6, weightDecay, decoupled: false, amsgrad);
        AssertClose(expected, actual[0]);
    }

    [Fact]
    public void AmsgradChangesTheUpdateWhenTheSecondMomentShrinks()
    {
        // Large then small gradients with a short second-moment memory (beta2 0.5): v falls below
        // its running max, so amsgrad must take smaller steps.
        float[][][] grads = [.. Enumerable.Range(0, Steps).Select(t => new[] { new[] { t < 2 ? 1f : 0.2f } })];
        float[][] init = [[0f]];
        var plain = Run(ps => new AdamW(ps, new AdamWOptions { Lr = 0.1, Beta2 = 0.5, WeightDecay = 0 }), init, [[1]], grads)[0][0];
        var ams = Run(ps => new AdamW(ps, new AdamWOptions { Lr = 0.1, Beta2 = 0.5, WeightDecay = 0, Amsgrad = true }), init, [[1]], grads)[0][0];
        Assert.True(Math.Abs(ams) < Math.Abs(plain) - 1e-3, $"amsgrad {ams} vs plain {plain}");
    }

    [Theory]
    [InlineData(0.0, 0.0, 0.0, false)]
    [InlineData(0.9, 0.0, 0.0, false)]
    [InlineData(0.9, 0.5, 0.01, false)]
    [InlineData(0.9, 0.0, 0.01, true)]
    public void SgdMatchesReference(double momentum, double dampening, double weightDecay, bool nesterov)
    {
        var (init, grads) = Data(3, 5);
        var options = new SgdOptions { Lr = 0.05, Momentum = momentum, Dampening = dampening, WeightDecay = weightDecay, Nesterov = nesterov };
        var actual = Run(ps => new Sgd(ps, options), init, VectorShapes, grads);
        var expected = SgdRef(ToDouble(init[0]), GradsOf(grads, 0), 0.05, momentum, dampening, weightDecay, nesterov);
        AssertClose(expected, actual[0]);
    }

    [Fact]
    public void SgdMaximizeClimbs()
    {
        float[][][] grads = [[[1f, -2f]]];
        var actual = Run(ps => new Sgd(ps, new SgdOptions { Lr = 0.5, Maximize = true }), [[0f, 0f]], [[2]], grads);
        Assert.Equal([0.5f, -1f], actual[0]);
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(0.1)]
    public void LionMatchesReference(double weightDecay)
    {
        var (init, grads) = Data(4, 5);
        var options = new LionOptions { Lr = 0.01, Beta1 = 0.9, Beta2 = 0.99, WeightDecay = weightDecay };
        var actual = Run(ps => new Lion(ps, options), init, VectorShapes, grads);
        var expected = LionRef(ToDouble(init[0]), GradsOf(grads, 0), 0.01, 0.9, 0.99, weightDecay);
        AssertClose(expected, actual[0]);
    }

    public static TheoryData<string> ProdigyCases => ["default", "bias_correction_safeguard_dcoef_decay", "coupled_decay_growth_limit"];

    private static (ProdigyOptions Options, ProdigyConfig Reference) ProdigyCase(string name) => name switch
    {
        "default" => (new ProdigyOptions(), new ProdigyConfig()),
        "bias_correction_safeguard_dcoef_decay" => (
            new ProdigyOptions { UseBiasCorrection = true, SafeguardWarmup = true, DCoef = 2, WeightDecay = 0.1 },
            new ProdigyConfig(UseBiasCorrection: true, SafeguardWarmup: true, DCoef: 2, WeightDecay: 0.1)),
        "coupled_decay_growth_limit" => (
            new ProdigyOptions { Decouple = false, WeightDecay = 0.1, GrowthRate = 1.5, D0 = 1e-3 },
            new ProdigyConfig(Decouple: false, WeightDecay: 0.1, GrowthRate: 1.5, D0: 1e-3)),
        _ => throw new ArgumentException(name),
    };

    /// <summary>
    /// Gradients that keep their direction from step to step (each element ±10% around its first value), as a loss with a
    /// steady slope has: the parameters travel along them, so Prodigy's estimate grows (random gradients would leave it at d0).
    /// </summary>
    private static (float[][] Init, float[][][] Grads) DriftingGradients(int seed, params int[] sizes)
    {
        var random = new Random(seed);
        var init = sizes.Select(n => Values(random, n)).ToArray();
        var slope = sizes.Select(n => Values(random, n)).ToArray();
        var grads = Enumerable.Range(0, ProdigySteps)
            .Select(_ => slope.Select(g => g.Select(x => x * (float)(0.9 + 0.2 * random.NextDouble())).ToArray()).ToArray()).ToArray();
        return (init, grads);
    }

    private const int ProdigySteps = 12;

    /// <summary>Prodigy over float32 parameters: their values and the estimate d after every step.</summary>
    private static (float[][] Params, double[] Estimates) RunProdigy(ProdigyOptions options, float[][] init, float[][][] grads)
    {
        var ps = init.Select(v => torch.Tensor(v, v.Length).RequiresGrad_()).ToArray();
        try
        {
            using var opt = new Prodigy(ps, options);
            var estimates = new List<double>();
            foreach (var stepGrads in grads)
            {
                using var scope = torch.NewDisposeScope();
                for (var i = 0; i < ps.Length; i++) ps[i].Grad = torch.Tensor(stepGrads[i], stepGrads[i].Length);
                opt.Step();
                opt.ZeroGrad();
                estimates.Add(opt.ParamGroups[0].Options.D!.Value);
            }
            return (ps.Select(p => p.ToArray<float>()).ToArray(), estimates.ToArray());
        }
        finally
        {
            foreach (var p in ps) p.Dispose();
        }
    }

    [Theory]
    [MemberData(nameof(ProdigyCases))]
    public void ProdigyMatchesReference(string name)
    {
        var (options, config) = ProdigyCase(name);
        var (init, grads) = DriftingGradients(7, 5, 3);
        var (actual, actualEstimates) = RunProdigy(options, init, grads);
        var (expected, expectedEstimates) = ProdigyRef(init.Select(ToDouble).ToArray(), grads.Select(s => s.Select(ToDouble).ToArray()).ToArray(), config);
        for (var k = 0; k < grads.Length; k++)
            Assert.True(Math.Abs(actualEstimates[k] - expectedEstimates[k]) <= ProdigyEstimateTolerance * expectedEstimates[k],
                $"{name}: d after step {k + 1} is {actualEstimates[k]:R}, expected {expectedEstimates[k]:R}");
        for (var j = 0; j < init.Length; j++) AssertClose(expected[j], actual[j]);
    }

    [Fact]
    public void ProdigysFirstTwoStepsAreTheHandComputedOnes()
    {
        // Defaults (d0 1e-6, lr 1, betas 0.9/0.999, beta3 √0.999), p = [0, 0] (exact in float32 however small the move),
        // the same gradient g = [0.5, −0.25] twice.
        double[] g = [0.5, -0.25];
        const double d0 = 1e-6;
        var (p, d) = RunProdigy(new ProdigyOptions(), [[0f, 0f]], [[[0.5f, -0.25f]], [[0.5f, -0.25f]]]);

        // Step 1: p0 = p, so the numerator is 0 and d stays d0. m = d0·0.1·g, √v = d0·√0.001·|g|; the step is d0·m/(√v + d0·eps).
        var p1 = g.Select(x => -d0 * (d0 * 0.1 * x) / (d0 * Math.Sqrt(0.001) * Math.Abs(x) + d0 * 1e-8)).ToArray();
        Assert.Equal(d0, d[0]);
        // Step 2: numerator = d0·Σ g·(0 − p1); s = (√0.999 + 1)·d0·g, so the denominator is (1 + √0.999)·d0·Σ|g|.
        var numerator = d0 * g.Zip(p1, (x, q) => x * -q).Sum();
        var denominator = (1 + Math.Sqrt(0.999)) * d0 * g.Sum(Math.Abs);
        var d2 = numerator / denominator;
        Assert.True(d2 > d0, "the hand-computed estimate must grow, or the check proves nothing");
        Assert.True(Math.Abs(d[1] - d2) <= ProdigyEstimateTolerance * d2, $"d after step 2 is {d[1]:R}, by hand {d2:R}");
        // Step 2 moves with the step size of before its sweep, d0, and the first moments grown by a second 0.1·d0·g.
        var p2 = g.Select((x, i) =>
        {
            var m = 0.9 * (d0 * 0.1 * x) + d0 * 0.1 * x;
            var v = 0.999 * (d0 * d0 * 0.001 * x * x) + d0 * d0 * 0.001 * x * x;
            return p1[i] - d0 * m / (Math.Sqrt(v) + d2 * 1e-8);
        }).ToArray();
        for (var i = 0; i < 2; i++) Assert.True(Math.Abs(p[0][i] - p2[i]) <= 1e-6 * Math.Abs(p2[i]), $"p[{i}] after step 2 is {p[0][i]:R}, by hand {p2[i]:R}");
    }

    /// <summary>
    /// The estimate is a ratio of sums of float32 dot products and absolute sums over 8 elements: each is off by a few
    /// float32 ulps (6e-8 relative), and the reference, float64 but for the parameters' own rounding, agrees with the
    /// engine to 1e-7 relative over 12 steps (measured). 1e-6 leaves room for another summation order; a wrong term
    /// (bias correction, beta3, the safeguard, d_coef) moves d by far more than 1%.
    /// </summary>
    private const double ProdigyEstimateTolerance = 1e-6;

    public static TheoryData<string> AdafactorCases => ["default", "beta1_decay_clip_manual_lr", "warmup_init_no_scale"];

    private static (AdafactorOptions Options, AdafactorConfig Reference) AdafactorCase(string name) => name switch
    {
        "default" => (new AdafactorOptions(), new AdafactorConfig()),
        // A clip threshold of 0.5 makes the RMS clipping bite from the first step.
        "beta1_decay_clip_manual_lr" => (
            new AdafactorOptions { Lr = 0.05, RelativeStep = false, ScaleParameter = false, Beta1 = 0.9, WeightDecay = 0.01, ClipThreshold = 0.5 },
            new AdafactorConfig(Lr: 0.05, RelativeStep: false, ScaleParameter: false, Beta1: 0.9, WeightDecay: 0.01, ClipThreshold: 0.5)),
        "warmup_init_no_scale" => (
            new AdafactorOptions { WarmupInit = true, ScaleParameter = false, DecayRate = -0.5 },
            new AdafactorConfig(WarmupInit: true, ScaleParameter: false, DecayRate: -0.5)),
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [MemberData(nameof(AdafactorCases))]
    public void AdafactorMatchesReferenceFactoredAndNot(string name)
    {
        var (options, reference) = AdafactorCase(name);
        // A [3, 4] matrix (factored second moment) and a 5-vector (full second moment) in one optimizer.
        var (init, grads) = Data(5, 12, 5);
        var actual = Run(ps => new Adafactor(ps, options), init, [[3, 4], [5]], grads);
        AssertClose(AdafactorRef(ToDouble(init[0]), 3, GradsOf(grads, 0), reference), actual[0]);
        AssertClose(AdafactorRef(ToDouble(init[1]), 0, GradsOf(grads, 1), reference), actual[1]);
    }

    [Fact]
    public void AdafactorKeepsFactoredStateSmall()
    {
        using var scope = torch.NewDisposeScope();
        using var w = torch.Zeros([3, 4]).RequiresGrad_();
        using var b = torch.Zeros([4]).RequiresGrad_();
        using var opt = new Adafactor([w, b]);
        w.Grad = torch.Ones([3, 4]);
        b.Grad = torch.Ones([4]);
        opt.Step();
        using var state = opt.StateDict();
        Assert.Equal(["state.0.exp_avg_sq_col", "state.0.exp_avg_sq_row", "state.1.exp_avg_sq"], state.Tensors.Keys.Order());
        Assert.Equal([3L], state.Tensors["state.0.exp_avg_sq_row"].Shape);
        Assert.Equal([4L], state.Tensors["state.0.exp_avg_sq_col"].Shape);
    }

    [Fact]
    public void AdafactorUpdatesBFloat16ParametersThroughFloat32()
    {
        using var scope = torch.NewDisposeScope();
        var (init, grads) = Data(6, 12);
        using var p = torch.Tensor(init[0], 3, 4).BFloat16().RequiresGrad_();
        var start = p.Float().ToArray<float>();
        var options = new AdafactorOptions { Lr = 0.05, RelativeStep = false, ScaleParameter = false };
        using var opt = new Adafactor([p], options);
        p.Grad = torch.Tensor(grads[0][0], 3, 4).BFloat16();
        opt.Step();
        Assert.Equal(DType.BFloat16, p.DType);
        using var state = opt.StateDict();
        Assert.Equal(DType.Float32, state.Tensors["state.0.exp_avg_sq_row"].DType);
        var gradBack = p.Grad!.Float();
        var expected = AdafactorRef(ToDouble(start), 3, [ToDouble(gradBack.ToArray<float>())],
            new AdafactorConfig(Lr: 0.05, RelativeStep: false, ScaleParameter: false));
        // bfloat16 keeps 8 significant bits: the result is rounded to within 2^-8 of O(1) values.
        var after = p.Float();
        AssertClose(expected, after.ToArray<float>(), 1.0 / 256);
        Assert.NotEqual(start, after.ToArray<float>());
    }

    [Fact]
    public void ParamGroupsUseTheirOwnHyperparameters()
    {
        var (init, grads) = Data(7, 4, 3);
        var baseOptions = new SgdOptions { Momentum = 0.9 };
        var actual = Run(ps => new Sgd(
            [
                new ParamGroup<SgdOptions>([ps[0]], baseOptions with { Lr = 0.1 }),
                new ParamGroup<SgdOptions>([ps[1]], baseOptions with { Lr = 0.01, WeightDecay = 0.5 }),
            ]), init, [[4], [3]], grads);
        AssertClose(SgdRef(ToDouble(init[0]), GradsOf(grads, 0), 0.1, 0.9, 0, 0, false), actual[0]);
        AssertClose(SgdRef(ToDouble(init[1]), GradsOf(grads, 1), 0.01, 0.9, 0, 0.5, false), actual[1]);

        var adamw = Run(ps => new AdamW([new ParamGroup<AdamWOptions>([ps[0]], new AdamWOptions { Lr = 0.02, WeightDecay = 0 })], new AdamWOptions())
            .Also(o => o.AddParamGroup([ps[1]], new AdamWOptions { Lr = 0.005, WeightDecay = 0.3 })), init, [[4], [3]], grads);
        AssertClose(AdamRef(ToDouble(init[0]), GradsOf(grads, 0), 0.02, 0.9, 0.999, 1e-8, 0, decoupled: true), adamw[0]);
        AssertClose(AdamRef(ToDouble(init[1]), GradsOf(grads, 1), 0.005, 0.9, 0.999, 1e-8, 0.3, decoupled: true), adamw[1]);
    }

    [Fact]
    public void GroupLrCanBeChangedBetweenSteps()
    {
        using var scope = torch.NewDisposeScope();
        using var p = torch.Tensor([0f]).RequiresGrad_();
        using var opt = new Sgd([p], new SgdOptions { Lr = 1 });
        p.Grad = torch.Tensor([1f]);
        opt.Step();
        opt.ParamGroups[0].Lr = 0.25;
        opt.Step();
        Assert.Equal(0.25, opt.ParamGroups[0].Options.Lr);
        Assert.Equal([-1.25f], p.ToArray<float>());
    }

    [Fact]
    public void ParametersWithoutGradientAreLeftAlone()
    {
        using var scope = torch.NewDisposeScope();
        using var a = torch.Tensor([1f, 2f]).RequiresGrad_();
        using var b = torch.Tensor([3f]).RequiresGrad_();
        using var opt = new AdamW([a, b]);
        a.Grad = torch.Tensor([1f, 1f]);
        opt.Step();
        Assert.Equal([3f], b.ToArray<float>());
        Assert.NotEqual([1f, 2f], a.ToArray<float>());
        using var state = opt.StateDict();
        Assert.All(state.Tensors.Keys, k => Assert.StartsWith("state.0.", k));
        Assert.Null(state.Json["state"]!["1"]);
    }

    [Fact]
    public void ZeroGradCanZeroInsteadOfDropping()
    {
        using var scope = torch.NewDisposeScope();
        using var p = torch.Tensor([1f]).RequiresGrad_();
        using var opt = new Sgd([p]);
        p.Grad = torch.Tensor([5f]);
        opt.ZeroGrad(setToNone: false);
        using var g = p.Grad!;
        Assert.Equal([0f], g.ToArray<float>());
    }

    [Fact]
    public void InvalidHyperparametersAreRefused()
    {
        using var p = torch.Zeros([2]).RequiresGrad_();
        Assert.Contains("relative_step", Assert.Throws<ArgumentException>(() => new Adafactor([p], new AdafactorOptions { Lr = 1e-3 })).Message);
        Assert.Contains("warmup_init", Assert.Throws<ArgumentException>(() => new Adafactor([p], new AdafactorOptions { RelativeStep = false, Lr = 1, WarmupInit = true })).Message);
        Assert.Contains("Nesterov", Assert.Throws<ArgumentException>(() => new Sgd([p], new SgdOptions { Nesterov = true })).Message);
        Assert.Contains("beta2", Assert.Throws<ArgumentException>(() => new AdamW([p], new AdamWOptions { Beta2 = 1 })).Message);
        Assert.Contains("learning rate", Assert.Throws<ArgumentException>(() => new Lion([p], new LionOptions { Lr = -1 })).Message);
        Assert.Contains("empty", Assert.Throws<ArgumentException>(() => new AdamW(Array.Empty<Tensor>())).Message);
        Assert.Contains("more than once", Assert.Throws<ArgumentException>(() => new AdamW([p, p])).Message);
        using var q = torch.Zeros([2]).RequiresGrad_();
        using var twice = new AdamW([p]);
        Assert.Contains("more than once", Assert.Throws<ArgumentException>(() => twice.AddParamGroup([q, p])).Message);
        Assert.Single(twice.ParamGroups);
        using var opt = new Sgd([p]);
        Assert.Throws<ArgumentException>(() => opt.ParamGroups[0].Lr = -0.1);
    }

    [Fact]
    public void NonLeafTensorsAreRefused()
    {
        using var p = torch.Zeros([2]).RequiresGrad_();
        using var q = p * 2;
        Assert.Contains("non-leaf", Assert.Throws<ArgumentException>(() => new Sgd([q])).Message);
    }
}

internal static class FluentExtensions
{
    public static T Also<T>(this T value, Action<T> action)
    {
        action(value);
        return value;
    }
}
