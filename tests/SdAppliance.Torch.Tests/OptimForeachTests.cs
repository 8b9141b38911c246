using SdAppliance.Torch.Optim;

namespace SdAppliance.Torch.Tests;

/// <summary>
/// The optimizers update lists of tensors with libtorch's _foreach operators (Adam and AdamW on CPU in one call of the
/// shim, which steps each tensor with the single-tensor operators and shares the tensors out across the threads). These tests step many
/// parameters of mixed sizes (some without a gradient at some steps, so their step counts part and they
/// land in different batches) and require the same bits as the single-tensor update written with the
/// per-tensor operators, the formulas the optimizers used before (as torch.optim's single-tensor path).
/// </summary>
public class OptimForeachTests
{
    private const int Steps = 4;
    private static readonly long[][] Shapes = [[7], [3, 5], [1], [16, 4], [2, 3, 4], [9], [5, 5], [4]];

    /// <summary>Whether parameter <paramref name="i"/> gets a gradient at <paramref name="step"/>: two parameters skip some steps.</summary>
    private static bool HasGrad(int i, int step) => !(i == 2 && step == 1) && !(i == 5 && step % 2 == 0);

    /// <summary>
    /// A LoRA's list at a small scale: 48 tensors of 5,120 values (below libtorch's grain size of 32,768, under which a
    /// kernel runs on the calling thread) that the CPU step shares out across the threads, two at or above it that it
    /// steps alone (their kernels split them across the threads, as for a tensor stepped by itself) and odd sizes
    /// (a vector kernel's remainder).
    /// </summary>
    private static readonly long[][] ListShapes =
        [.. Enumerable.Range(0, 48).Select(i => i % 2 == 0 ? new long[] { 16, 320 } : [320, 16]), [40_000], [7, 13], [16, 2560], [3]];

    private static Tensor[] Parameters(int seed, long[][] shapes)
    {
        using var g = new Generator((ulong)seed);
        return shapes.Select(s => torch.Randn(s, g).DetachFromDisposeScope().RequiresGrad_()).ToArray();
    }

    private static Tensor Grad(Generator g, long[] shape) => torch.Randn(shape, g);

    /// <summary>Runs <paramref name="optimizer"/> and the reference side by side from equal parameters and gradients; returns both final values.</summary>
    private static void AssertSameBits(Func<Tensor[], Optimizer> optimizer, Action<Tensor, Tensor, Dictionary<string, Tensor>, long> reference,
        long[][]? shapes = null)
    {
        shapes ??= Shapes;
        using var scope = torch.NewDisposeScope();
        var ps = Parameters(11, shapes);
        var refs = ps.Select(p => p.Detach().Clone()).ToArray();
        var states = refs.Select(_ => new Dictionary<string, Tensor>()).ToArray();
        var steps = new long[ps.Length];
        using var opt = optimizer(ps);
        using var g = new Generator(12);
        for (var step = 0; step < Steps; step++)
        {
            for (var i = 0; i < ps.Length; i++)
            {
                if (!HasGrad(i, step)) continue;
                var grad = Grad(g, shapes[i]);
                ps[i].Grad = grad;
                using (Autograd.NoGrad()) reference(refs[i], grad, states[i], ++steps[i]);
            }
            opt.Step();
            opt.ZeroGrad();
        }
        for (var i = 0; i < ps.Length; i++)
            Assert.Equal(refs[i].ToArray<float>(), ps[i].ToArray<float>());
        foreach (var p in ps) p.Dispose();
    }

    private static Tensor State(Dictionary<string, Tensor> state, string name, Tensor like) =>
        state.TryGetValue(name, out var t) ? t : state[name] = torch.ZerosLike(like);

    private static void AdamReference(Tensor param, Tensor grad, Dictionary<string, Tensor> state, long step, double lr, double beta1,
        double beta2, double eps, double weightDecay, bool decoupled, bool amsgrad, bool maximize)
    {
        var g = maximize ? grad.Neg() : grad;
        if (weightDecay != 0)
        {
            if (decoupled) param.Mul_(1 - lr * weightDecay);
            else g = g.Add(param, weightDecay);
        }
        var expAvg = State(state, "exp_avg", param);
        var expAvgSq = State(state, "exp_avg_sq", param);
        expAvg.Lerp_(g, 1 - beta1);
        expAvgSq.Mul_(beta2).Addcmul_(g, g, 1 - beta2);
        var stepSize = lr / (1 - Math.Pow(beta1, step));
        var biasCorrection2Sqrt = Math.Sqrt(1 - Math.Pow(beta2, step));
        var second = amsgrad ? State(state, "max_exp_avg_sq", param).Maximum_(expAvgSq) : expAvgSq;
        param.Addcdiv_(expAvg, second.Sqrt().Div_(biasCorrection2Sqrt).Add_(eps), -stepSize);
    }

    [Theory]
    [InlineData(0.9, 0.01, false, false)]
    [InlineData(0.8, 0.1, true, false)]
    [InlineData(0.9, 0.0, false, true)]
    // beta1 0.4: the moment's lerp weight is 0.6, where libtorch's lerp takes its other formula.
    [InlineData(0.4, 0.01, false, false)]
    public void AdamWMatchesTheSingleTensorUpdate(double beta1, double weightDecay, bool amsgrad, bool maximize)
    {
        var o = new AdamWOptions { Lr = 0.01, Beta1 = beta1, Beta2 = 0.95, WeightDecay = weightDecay, Amsgrad = amsgrad, Maximize = maximize };
        AssertSameBits(ps => new AdamW(ps, o),
            (p, g, s, t) => AdamReference(p, g, s, t, o.Lr, o.Beta1, o.Beta2, o.Eps, o.WeightDecay, decoupled: true, o.Amsgrad, o.Maximize));
    }

    [Theory]
    [InlineData(0.01, false, false)]
    [InlineData(0.0, true, true)]
    public void AdamWOverAListSharedOutAcrossThreadsMatchesTheSingleTensorUpdate(double weightDecay, bool amsgrad, bool maximize)
    {
        var o = new AdamWOptions { Lr = 0.01, Beta2 = 0.95, WeightDecay = weightDecay, Amsgrad = amsgrad, Maximize = maximize };
        AssertSameBits(ps => new AdamW(ps, o),
            (p, g, s, t) => AdamReference(p, g, s, t, o.Lr, o.Beta1, o.Beta2, o.Eps, o.WeightDecay, decoupled: true, o.Amsgrad, o.Maximize),
            ListShapes);
    }

    [Fact]
    public void AdamOverAListSharedOutAcrossThreadsMatchesTheSingleTensorUpdate()
    {
        var o = new AdamOptions { Lr = 0.01, WeightDecay = 0.1 };
        AssertSameBits(ps => new Adam(ps, o),
            (p, g, s, t) => AdamReference(p, g, s, t, o.Lr, o.Beta1, o.Beta2, o.Eps, o.WeightDecay, decoupled: false, o.Amsgrad, o.Maximize),
            ListShapes);
    }

    [Fact]
    public void AdamMatchesTheSingleTensorUpdate()
    {
        var o = new AdamOptions { Lr = 0.01, WeightDecay = 0.1, Amsgrad = true };
        AssertSameBits(ps => new Adam(ps, o),
            (p, g, s, t) => AdamReference(p, g, s, t, o.Lr, o.Beta1, o.Beta2, o.Eps, o.WeightDecay, decoupled: false, o.Amsgrad, o.Maximize));
    }

    [Fact]
    public void LionMatchesTheSingleTensorUpdate()
    {
        var o = new LionOptions { Lr = 0.01, WeightDecay = 0.1 };
        AssertSameBits(ps => new Lion(ps, o), (p, g, s, _) =>
        {
            var expAvg = State(s, "exp_avg", p);
            p.Mul_(1 - o.Lr * o.WeightDecay);
            p.Add_(expAvg.Mul(o.Beta1).Add_(g, 1 - o.Beta1).Sign_(), -o.Lr);
            expAvg.Mul_(o.Beta2).Add_(g, 1 - o.Beta2);
        });
    }

    [Theory]
    [InlineData(0.9, 0.1, 0.01, false, false)]
    [InlineData(0.9, 0.0, 0.01, true, true)]
    [InlineData(0.0, 0.0, 0.0, false, false)]
    public void SgdMatchesTheSingleTensorUpdate(double momentum, double dampening, double weightDecay, bool nesterov, bool maximize)
    {
        var o = new SgdOptions { Lr = 0.05, Momentum = momentum, Dampening = dampening, WeightDecay = weightDecay, Nesterov = nesterov, Maximize = maximize };
        AssertSameBits(ps => new Sgd(ps, o), (p, g, s, _) =>
        {
            var d = o.Maximize ? g.Neg() : g;
            if (o.WeightDecay != 0) d = d.Add(p, o.WeightDecay);
            if (o.Momentum != 0)
            {
                if (s.TryGetValue("momentum_buffer", out var buf)) buf.Mul_(o.Momentum).Add_(d, 1 - o.Dampening);
                else buf = s["momentum_buffer"] = d.Clone();
                d = o.Nesterov ? d.Add(buf, o.Momentum) : buf;
            }
            p.Add_(d, -o.Lr);
        });
    }
}
