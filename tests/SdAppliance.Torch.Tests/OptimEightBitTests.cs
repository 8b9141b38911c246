using SdAppliance.Torch.Optim;

namespace SdAppliance.Torch.Tests;

/// <summary>
/// The 8-bit optimizers against numbers worked out here: the dynamic code from its definition, quantisation against a
/// brute-force nearest-value search, the round trip against the code's widest gap, AdamW8bit's first steps against a
/// scalar reimplementation, and AdamW8bit over 100 steps against float32 AdamW.
/// </summary>
public class OptimEightBitTests
{
    // Normal(0, 1) values (Box–Muller), so that blocks hold small and large magnitudes as moments do.
    private static float[] Normal(int seed, int n, double scale = 1)
    {
        var random = new Random(seed);
        return [.. Enumerable.Range(0, n).Select(_ => (float)(scale * Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble())))];
    }

    [Fact]
    public void TheDynamicCodesHoldTheValuesOfTheirDefinition()
    {
        var signed = BlockwiseQuantization.DynamicCode(signed: true);
        var unsigned = BlockwiseQuantization.DynamicCode(signed: false);
        Assert.Equal(256, signed.Length);
        Assert.Equal(256, unsigned.Length);
        Assert.True(signed.Zip(signed.Skip(1)).All(p => p.First < p.Second), "the signed code is sorted and has no repeated value");
        Assert.True(unsigned.Zip(unsigned.Skip(1)).All(p => p.First < p.Second), "the unsigned code is sorted and has no repeated value");

        // Signed: 127 negative values, 0 at index 127, 127 positive fractions and 1. The lowest decade (10^-6) has one
        // fraction, the mean of linspace(0.1, 1, 2) = 0.55; the top one 64, the last the mean of 1 - 0.9/64 and 1.
        Assert.Equal(0f, signed[127]);
        Assert.Equal(1f, signed[255]);
        Assert.Equal(5.5e-7, signed[128], 1e-12);
        Assert.Equal(-5.5e-7, signed[126], 1e-12);
        Assert.Equal(-(1 - 0.9 / 64 / 2), signed[0], 1e-6);
        // Unsigned: 0, then two fractions in the lowest decade (the means of linspace(0.1, 1, 3): 0.325 and 0.775), up to 1.
        Assert.Equal(0f, unsigned[0]);
        Assert.Equal(3.25e-7, unsigned[1], 1e-12);
        Assert.Equal(7.75e-7, unsigned[2], 1e-12);
        Assert.Equal(1 - 0.9 / 128 / 2, unsigned[254], 1e-6);
        Assert.Equal(1f, unsigned[255]);
    }

    /// <summary>The code index a brute-force search picks: the nearest value, a negative value never rounded to 0; -1 when two are as near.</summary>
    private static int Nearest(float[] code, float normalised, bool signed)
    {
        var order = Enumerable.Range(0, code.Length).OrderBy(i => Math.Abs(code[i] - (double)normalised)).ToArray();
        var (best, second) = (Math.Abs(code[order[0]] - (double)normalised), Math.Abs(code[order[1]] - (double)normalised));
        // Within float rounding of a midpoint either neighbour is right.
        if (second - best < 4e-7 * Math.Abs(normalised) + 1e-12) return -1;
        var index = order[0];
        if (signed && normalised < 0 && code[index] == 0) index--;
        return index;
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void QuantisationPicksTheNearestCodeOfEachBlocksNormalisedValue(bool signed)
    {
        using var scope = torch.NewDisposeScope();
        // Two full blocks and a partial one; the middle block is scaled down a thousandfold (blocks are independent).
        var values = Normal(3, 5000);
        for (var i = 2048; i < 4096; i++) values[i] *= 1e-3f;
        if (signed) values[100] = -1e-9f;
        else values = [.. values.Select(v => v * v)];
        var (codes, absmax) = BlockwiseQuantization.Quantize(torch.Tensor(values, 50, 100), signed);
        Assert.Equal(DType.UInt8, codes.DType);
        Assert.Equal([50L, 100], codes.Shape);
        Assert.Equal([3L], absmax.Shape);

        var code = BlockwiseQuantization.DynamicCode(signed);
        var blockMax = Enumerable.Range(0, 3).Select(b => values.Skip(b * 2048).Take(2048).Max(Math.Abs)).ToArray();
        Assert.Equal(blockMax, absmax.ToArray<float>());
        var actual = codes.ToArray<byte>();
        var compared = 0;
        for (var i = 0; i < values.Length; i++)
        {
            var expected = Nearest(code, values[i] / blockMax[i / 2048], signed);
            if (expected < 0) continue;
            compared++;
            Assert.True(expected == actual[i], $"value {i} ({values[i]:R}): code {actual[i]}, nearest is {expected}");
        }
        Assert.True(compared > 4990, $"only {compared} values were away from a midpoint");
        if (signed) Assert.True(code[actual[100]] < 0, "a tiny negative value keeps its sign");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void TheRoundTripErrsByAtMostHalfTheWidestGapOfTheCodeTimesTheBlocksAbsmax(bool signed)
    {
        using var scope = torch.NewDisposeScope();
        var values = Normal(7, 3 * 2048 + 17, scale: 0.05);
        if (!signed) values = [.. values.Select(v => v * v)];
        var (codes, absmax) = BlockwiseQuantization.Quantize(torch.Tensor(values), signed);
        var back = BlockwiseQuantization.Dequantize(codes, absmax, signed).ToArray<float>();
        // The widest gap between neighbouring code values is that of the top decade's fractions: 0.9/64 in the signed
        // code, 0.9/128 in the unsigned one (every other gap, across decades too, is narrower); nearest rounding errs by
        // half a gap at most, and float32 arithmetic adds a few ulps of the absmax.
        var halfGap = (signed ? 0.9 / 64 : 0.9 / 128) / 2;
        var max = absmax.ToArray<float>();
        double worst = 0;
        for (var i = 0; i < values.Length; i++)
        {
            var error = Math.Abs(values[i] - back[i]) / max[i / 2048];
            worst = Math.Max(worst, error);
            Assert.True(error <= halfGap + 1e-6, $"value {i}: {values[i]:R} came back as {back[i]:R}");
        }
        // Not a loose bound: the worst value comes close to it.
        Assert.True(worst > halfGap / 2, $"worst error {worst} of a bound {halfGap}");
        // Each block's largest magnitude itself comes back exactly in the unsigned code (1 is a code value).
        if (!signed) Assert.Equal(max[0], back[Array.IndexOf(values, values.Take(2048).Max())]);
    }

    [Fact]
    public void ABlockOfZerosStaysZeros()
    {
        using var scope = torch.NewDisposeScope();
        var (codes, absmax) = BlockwiseQuantization.Quantize(torch.Zeros([3000]), signed: true);
        Assert.Equal([0f, 0f], absmax.ToArray<float>());
        Assert.All(BlockwiseQuantization.Dequantize(codes, absmax, signed: true).ToArray<float>(), v => Assert.Equal(0f, v));
    }

    /// <summary>AdamW8bit written out elementwise: dequantise, update in double, quantise by brute force.</summary>
    private static double[] AdamW8bitReference(float[] p0, IReadOnlyList<float[]> grads, double lr, double beta1, double beta2, double eps, double weightDecay)
    {
        var signedCode = BlockwiseQuantization.DynamicCode(signed: true);
        var unsignedCode = BlockwiseQuantization.DynamicCode(signed: false);
        var n = p0.Length;
        var blocks = (n + 2047) / 2048;
        var p = p0.Select(v => (double)v).ToArray();
        var (q1, q2) = (new int[n], new int[n]);
        var (absmax1, absmax2) = (new double[blocks], new double[blocks]);
        // Index 0 of the signed code is -1 and of the unsigned 0; with absmax 0 both start as 0, as zeroed states do.
        for (var t = 1; t <= grads.Count; t++)
        {
            var m = new double[n];
            var v = new double[n];
            for (var i = 0; i < n; i++)
            {
                double g = grads[t - 1][i];
                m[i] = beta1 * (signedCode[q1[i]] * absmax1[i / 2048]) + (1 - beta1) * g;
                v[i] = beta2 * (unsignedCode[q2[i]] * absmax2[i / 2048]) + (1 - beta2) * g * g;
                var correction2 = Math.Sqrt(1 - Math.Pow(beta2, t));
                p[i] += -lr * correction2 / (1 - Math.Pow(beta1, t)) * m[i] / (Math.Sqrt(v[i]) + eps * correction2);
                p[i] *= 1 - lr * weightDecay;
            }
            for (var b = 0; b < blocks; b++)
            {
                var range = Enumerable.Range(b * 2048, Math.Min(2048, n - b * 2048));
                absmax1[b] = (float)range.Max(i => Math.Abs(m[i]));
                absmax2[b] = (float)range.Max(i => Math.Abs(v[i]));
            }
            for (var i = 0; i < n; i++)
            {
                q1[i] = Nearest(signedCode, (float)(m[i] / absmax1[i / 2048]), signed: true);
                q2[i] = Nearest(unsignedCode, (float)(v[i] / absmax2[i / 2048]), signed: false);
                Assert.True(q1[i] >= 0 && q2[i] >= 0, $"step {t}, value {i} lies on a midpoint: pick other data");
            }
        }
        return p;
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void AdamW8bitStepsAsItsElementwiseDefinition(bool cpuKernel)
    {
        const int steps = 4;
        var init = Normal(11, 300);
        var grads = Enumerable.Range(0, steps).Select(s => Normal(20 + s, 300, scale: 0.1)).ToArray();
        var expected = AdamW8bitReference(init, grads, lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1);

        using var scope = torch.NewDisposeScope();
        using var p = torch.Tensor(init).RequiresGrad_();
        using var opt = new AdamW8bit([p], new AdamW8bitOptions { Lr = 0.01, WeightDecay = 0.1, MinEightBitSize = 0 }) { UseCpuKernel = cpuKernel };
        foreach (var g in grads)
        {
            p.Grad = torch.Tensor(g);
            opt.Step();
            opt.ZeroGrad();
        }
        var actual = p.ToArray<float>();
        // Each step moves a value by at most about lr (0.01); float32 rounding of O(1) values is ~1e-7 per operation.
        // A moment quantised to a neighbouring code would move its value by lr × (a code gap, ≥ 1e-3) ≥ 1e-5.
        for (var i = 0; i < actual.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= 2e-6, $"value {i}: expected {expected[i]:R}, got {actual[i]:R}");
        using var state = opt.StateDict();
        Assert.Equal(["state.0.absmax1", "state.0.absmax2", "state.0.state1", "state.0.state2"], state.Tensors.Keys.Order(StringComparer.Ordinal));
        Assert.Equal(DType.UInt8, state.Tensors["state.0.state1"].DType);
        Assert.Equal([1L], state.Tensors["state.0.absmax2"].Shape);
    }

    [Fact]
    public void ParametersBelowMinEightBitSizeKeepFloat32MomentsAndStepAsAdamWWithDecayAfterTheUpdate()
    {
        using var scope = torch.NewDisposeScope();
        var init = Normal(4, 30);
        var grads = Enumerable.Range(0, 5).Select(s => Normal(40 + s, 30, scale: 0.1)).ToArray();
        using var p = torch.Tensor(init).RequiresGrad_();
        using var opt = new AdamW8bit([p], new AdamW8bitOptions { Lr = 0.01, WeightDecay = 0.1 });
        foreach (var g in grads)
        {
            p.Grad = torch.Tensor(g);
            opt.Step();
        }
        using var state = opt.StateDict();
        Assert.Equal(["state.0.state1", "state.0.state2"], state.Tensors.Keys.Order(StringComparer.Ordinal));
        Assert.Equal(DType.Float32, state.Tensors["state.0.state1"].DType);
        // bitsandbytes decays after the update: p ← (p + Δ)(1 − lr·wd), where torch's AdamW decays first; written out here.
        var m = new double[30];
        var v = new double[30];
        var expected = init.Select(x => (double)x).ToArray();
        for (var t = 1; t <= grads.Length; t++)
            for (var i = 0; i < 30; i++)
            {
                double g = grads[t - 1][i];
                m[i] = 0.9 * m[i] + 0.1 * g;
                v[i] = 0.999 * v[i] + 0.001 * g * g;
                var c2 = Math.Sqrt(1 - Math.Pow(0.999, t));
                expected[i] = (expected[i] - 0.01 * c2 / (1 - Math.Pow(0.9, t)) * m[i] / (Math.Sqrt(v[i]) + 1e-8 * c2)) * (1 - 0.001);
            }
        var actual = p.ToArray<float>();
        for (var i = 0; i < 30; i++) Assert.True(Math.Abs(expected[i] - actual[i]) <= 2e-6, $"value {i}: expected {expected[i]:R}, got {actual[i]:R}");
    }

    /// <summary>Least squares: W [64, 96] (three blocks of moments) fitted to y = x·W*ᵀ for a fixed W*; returns the loss per step.</summary>
    private static (double[] Losses, float[] W) Fit(Func<Tensor, Optimizer> make, int steps)
    {
        using var scope = torch.NewDisposeScope();
        var x = torch.Tensor(Normal(1, 128 * 96), 128, 96);
        var target = torch.Tensor(Normal(2, 64 * 96, scale: 0.5), 64, 96);
        var y = Functional.Linear(x, target, null);
        var w = torch.Tensor(Normal(3, 64 * 96, scale: 0.1), 64, 96).RequiresGrad_();
        using var opt = make(w);
        var losses = new double[steps];
        for (var s = 0; s < steps; s++)
        {
            using var step = torch.NewDisposeScope();
            var diff = Functional.Linear(x, w, null) - y;
            var loss = (diff * diff).Mean();
            losses[s] = loss.Item();
            loss.Backward();
            opt.Step();
            opt.ZeroGrad();
        }
        return (losses, w.ToArray<float>());
    }

    [Fact]
    public void AdamW8bitFollowsAdamWOverAHundredSteps()
    {
        const int steps = 100;
        var (reference, w32) = Fit(w => new AdamW([w], new AdamWOptions { Lr = 0.01, WeightDecay = 0.01 }), steps);
        var (eightBit, w8) = Fit(w => new AdamW8bit([w], new AdamW8bitOptions { Lr = 0.01, WeightDecay = 0.01 }), steps);
        var start = Normal(3, 64 * 96, scale: 0.1);

        Assert.True(reference[^1] < reference[0] / 20, $"AdamW itself fits the problem ({reference[0]} to {reference[^1]})");
        // Quantising a moment errs by up to 0.7% of its block's largest value (the round-trip test), which for the many
        // values far below that largest one is a large share of their own moment: single weights may part by more
        // than 10% of their movement, but the fit as a whole follows AdamW. Measured here: RMS weight difference 5.3%
        // of AdamW's RMS movement, losses within 3.2% at every step; the bounds leave a factor 2 for other CPUs' float
        // kernels. A wrong formula or code (a missing bias correction, the signed code for v) is off by far more.
        double Rms(IEnumerable<double> values) => Math.Sqrt(values.Average(v => v * v));
        var movement = Rms(w32.Zip(start, (a, b) => (double)a - b));
        var difference = Rms(w32.Zip(w8, (a, b) => (double)a - b));
        var worstLoss = Enumerable.Range(0, steps).Max(s => Math.Abs(eightBit[s] - reference[s]) / reference[s]);
        Assert.True(difference <= 0.11 * movement, $"RMS weight difference {difference}: {difference / movement:P1} of AdamW's RMS movement {movement}");
        Assert.True(worstLoss <= 0.065, $"a loss {worstLoss:P1} away from AdamW's");
    }

    [Fact]
    public void Lion8bitWithFloat32StateIsLionAndItsFirstQuantisedStepToo()
    {
        using var scope = torch.NewDisposeScope();
        var init = Normal(5, 5000);
        var grads = Enumerable.Range(0, 6).Select(s => Normal(50 + s, 5000, scale: 0.1)).ToArray();
        float[] Run(Func<Tensor, Optimizer> make, int steps)
        {
            using var p = torch.Tensor(init).RequiresGrad_();
            using var opt = make(p);
            foreach (var g in grads.Take(steps))
            {
                p.Grad = torch.Tensor(g);
                opt.Step();
            }
            return p.ToArray<float>();
        }
        var lion = new LionOptions { Lr = 0.01, WeightDecay = 0.1 };
        Assert.Equal(Run(p => new Lion([p], lion), 6), Run(p => new Lion8bit([p], new Lion8bitOptions { Lr = 0.01, WeightDecay = 0.1, MinEightBitSize = 10_000 }), 6));
        // From a zero momentum the first move is lr·sign(g) whatever the state's precision.
        var quantised = new Lion8bitOptions { Lr = 0.01, WeightDecay = 0.1, MinEightBitSize = 0 };
        Assert.Equal(Run(p => new Lion([p], lion), 1), Run(p => new Lion8bit([p], quantised), 1));
        // Later moves follow sign(0.9·m + 0.1·g): a quantised m flips it only where that sum is near 0.
        var plain = Run(p => new Lion([p], lion), 6);
        var eight = Run(p => new Lion8bit([p], quantised), 6);
        var same = plain.Zip(eight).Count(pair => Math.Abs(pair.First - pair.Second) < 1e-6);
        Assert.True(same >= 0.97 * plain.Length, $"only {same} of {plain.Length} values moved as Lion's");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void TheFusedCpuKernelStepsAsTheComposedOperators(bool adam)
    {
        // Three blocks and a partial fourth, 20 steps: the two paths round the same formulas in float32, where the
        // operators may fuse a multiply-add that the kernel rounds twice, so a moment on a code boundary may land on
        // the neighbouring code; everything else is equal.
        const int n = 3 * 2048 + 500;
        var init = Normal(8, n);
        var grads = Enumerable.Range(0, 20).Select(s => Normal(80 + s, n, scale: 0.1)).ToArray();
        (float[] P, Dictionary<string, float[]> State) Run(bool cpuKernel)
        {
            using var scope = torch.NewDisposeScope();
            using var p = torch.Tensor(init).RequiresGrad_();
            using Optimizer opt = adam
                ? new AdamW8bit([p], new AdamW8bitOptions { Lr = 0.01, WeightDecay = 0.1 }) { UseCpuKernel = cpuKernel }
                : new Lion8bit([p], new Lion8bitOptions { Lr = 0.01, WeightDecay = 0.1 }) { UseCpuKernel = cpuKernel };
            foreach (var g in grads)
            {
                p.Grad = torch.Tensor(g);
                opt.Step();
            }
            using var state = opt.StateDict();
            return (p.ToArray<float>(), state.Tensors.ToDictionary(kv => kv.Key, kv => kv.Value.Float().ToArray<float>()));
        }
        var fused = Run(cpuKernel: true);
        var composed = Run(cpuKernel: false);
        Assert.Equal(composed.State.Keys.Order(), fused.State.Keys.Order());
        foreach (var (name, values) in composed.State)
        {
            var other = fused.State[name];
            if (name.Contains("absmax", StringComparison.Ordinal))
            {
                // A block's largest moment, rounded in two orders: a few float32 ulps apart at most.
                var worst = values.Zip(other).Max(pair => Math.Abs(pair.First - pair.Second) / Math.Abs(pair.First));
                Assert.True(worst <= 1e-6, $"{name}: relative difference {worst}");
                continue;
            }
            var differing = values.Zip(other).Count(pair => pair.First != pair.Second);
            Assert.True(differing <= values.Length / 1000, $"{name}: {differing} of {values.Length} codes differ");
        }
        // A moment one code apart moves its value by lr × a code gap's share of the update, at most about 1e-4 (Adam)
        // or, for Lion, by 2·lr where the flip changes a sign (rare: the sum must be near 0 as well).
        var far = fused.P.Zip(composed.P).Count(pair => Math.Abs(pair.First - pair.Second) > 1e-6);
        Assert.True(far <= n / 500, $"{far} of {n} parameters differ by more than 1e-6");
    }

    [Fact]
    public void TheCpuKernelRefusesAStateThatDoesNotFitNamingIt()
    {
        using var scope = torch.NewDisposeScope();
        var state = new ParamState();
        state.Set("state1", torch.Zeros([10], DType.UInt8));
        state.Set("absmax1", torch.Zeros([2]));
        var e = Assert.Throws<TorchException>(() => EightBitState.StepOnCpu(adam: false, torch.Zeros([10]), torch.Zeros([10]), state, 0.9, 0.99, 0, 0.1, 0));
        Assert.Contains("state1 must be a contiguous uint8 CPU tensor of 10 values with a float32 absmax of 1", e.Message);
        state.Dispose();
    }
}
