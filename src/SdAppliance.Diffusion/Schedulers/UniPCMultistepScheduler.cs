using SdAppliance.Torch;

namespace SdAppliance.Diffusion.Schedulers;

/// <summary>
/// UniPC (Zhao et al. 2023), diffusers' <c>UniPCMultistepScheduler</c>: a multistep predictor
/// (UniP) whose result is refined, once the model has been evaluated there, by a corrector (UniC)
/// that reuses that evaluation — so the correction costs no extra model call. Defaults as diffusers:
/// B(h) variant bh2, order 2, x₀-prediction, lower order at the end.
/// </summary>
public sealed class UniPCMultistepScheduler : SigmaScheduler
{
    /// <summary>diffusers' constructor defaults.</summary>
    public static readonly SchedulerConfig Defaults = new()
    {
        NumTrainTimesteps = 1000, BetaStart = 0.0001, BetaEnd = 0.02, BetaSchedule = "linear",
        SolverOrder = 2, PredictionType = "epsilon", Thresholding = false, DynamicThresholdingRatio = 0.995,
        SampleMaxValue = 1.0, PredictX0 = true, SolverType = "bh2", LowerOrderFinal = true, DisableCorrector = [],
        UseKarrasSigmas = false, UseExponentialSigmas = false, UseBetaSigmas = false, UseFlowSigmas = false,
        FlowShift = 1.0, TimestepSpacing = "linspace", StepsOffset = 0, FinalSigmasType = "zero",
        RescaleBetasZeroSnr = false, UseDynamicShifting = false, TimeShiftType = "exponential",
    };

    private readonly int solverOrder;
    private readonly bool predictX0;
    private readonly bool bh1;
    private Tensor?[] modelOutputs;
    private int lowerOrderNums;
    private int thisOrder;
    private Tensor? lastSample;

    public UniPCMultistepScheduler(SchedulerConfig? config = null)
        : base(Normalize(config ?? new()), Defaults, tinyTerminalAlpha: true)
    {
        CheckPrediction("epsilon", "v_prediction", "sample");
        CheckSigmaShapes();
        solverOrder = Config.SolverOrder ?? 2;
        if (solverOrder < 1) throw new ArgumentException("solver_order must be at least 1");
        predictX0 = Config.PredictX0 ?? true;
        bh1 = Config.SolverType switch
        {
            "bh1" => true,
            "bh2" => false,
            var other => throw new NotSupportedException($"solver_type '{other}' is not supported (bh1, bh2)"),
        };
        if (Config.UseFlowSigmas == true || Config.UseDynamicShifting == true)
            throw new NotSupportedException("flow-matching sigmas are not supported");
        modelOutputs = new Tensor?[solverOrder];
    }

    /// <summary>diffusers maps DPM-Solver's solver types onto bh2 (a DPM config used as the base).</summary>
    private static SchedulerConfig Normalize(SchedulerConfig c) =>
        c.SolverType is "midpoint" or "heun" or "logrho" ? c with { SolverType = "bh2" } : c;

    public override void SetTimesteps(int numInferenceSteps, Device? device = null)
    {
        if (numInferenceSteps < 1) throw new ArgumentOutOfRangeException(nameof(numInferenceSteps));
        var n = NumTrainTimesteps;
        var ts = ScheduleMath.SpacingSkipLast(Config.TimestepSpacing!, n, n, numInferenceSteps, Config.StepsOffset ?? 0);
        double[] sigmas;
        var table = TrainSigmaTable;
        if (Config.UseKarrasSigmas == true || Config.UseExponentialSigmas == true || Config.UseBetaSigmas == true)
        {
            var descending = table.Reverse().Select(s => (double)s).ToArray();
            (sigmas, ts) = ReshapeSigmas(descending, numInferenceSteps, configBounds: true);
            if (Config.UseKarrasSigmas == true) ts = ts.Select(ScheduleMath.Round).ToArray();
            // Reshaped schedules end on their last sigma when final_sigmas_type is sigma_min.
            var last = (Config.FinalSigmasType ?? "zero") switch
            {
                "zero" => 0.0,
                "sigma_min" => sigmas[^1],
                var other => throw new NotSupportedException($"final_sigmas_type '{other}' is not supported (zero, sigma_min)"),
            };
            sigmas = [.. sigmas, last];
        }
        else
        {
            sigmas = [.. ts.Select(t => ScheduleMath.Interp(t, table)), FinalSigma()];
        }
        ts = ts.Select(Math.Truncate).ToArray();
        NumInferenceSteps = ts.Length;
        ResetState();
        SetSigmaSchedule(ts, DType.Int64, device, sigmas);
    }

    private Tensor ConvertModelOutput(Tensor modelOutput, Tensor sample, int index)
    {
        var (alphaT, sigmaT) = AlphaSigma(SigmaValues[index]);
        if (predictX0)
        {
            var x0 = PredictOriginalVariancePreserving(modelOutput, sample, alphaT, sigmaT);
            return Config.Thresholding == true ? ThresholdSample(x0) : x0;
        }
        return PredictNoiseVariancePreserving(modelOutput, sample, alphaT, sigmaT);
    }

    public override SchedulerOutput Step(Tensor modelOutput, double timestep, Tensor sample, NoiseSource? noise = null)
    {
        if (NumInferenceSteps is null) throw NotReady();
        var index = InitStepIndex(timestep, lastWhenMissing: true);
        var disabled = Config.DisableCorrector ?? [];
        var useCorrector = index > 0 && !disabled.Contains(index - 1) && lastSample is not null;

        using var scope = torch.NewDisposeScope();
        var mo = Upcast(modelOutput);
        var x = Upcast(sample);
        var converted = ConvertModelOutput(mo, x, index);
        if (useCorrector) x = Corrector(converted, lastSample!, thisOrder, index);

        modelOutputs[0]?.Dispose();
        for (var i = 0; i < solverOrder - 1; i++) modelOutputs[i] = modelOutputs[i + 1];
        modelOutputs[^1] = converted.Alias().DetachFromDisposeScope();

        var order = Config.LowerOrderFinal == true ? Math.Min(solverOrder, TimestepValues.Count - index) : solverOrder;
        thisOrder = Math.Min(order, lowerOrderNums + 1); // warm-up: the order grows with the history
        lastSample?.Dispose();
        lastSample = x.Alias().DetachFromDisposeScope();
        var prev = Predictor(x, thisOrder, index);
        if (lowerOrderNums < solverOrder) lowerOrderNums++;
        StepIndex = index + 1;
        return new SchedulerOutput(CastLike(prev, modelOutput).MoveToOuterScope(),
            predictX0 ? CastLike(converted, modelOutput).MoveToOuterScope() : null);
    }

    /// <summary>The B(h)-dependent right-hand side b and the matrix R of ratio powers.</summary>
    private (double[,] R, double[] B, double HPhi1, double Bh) Coefficients(double h, double[] rks, int order)
    {
        var hh = predictX0 ? -h : h;
        var hPhi1 = ScheduleMath.ExpM1(hh); // h·φ₁(h) = e^h − 1
        var hPhiK = hPhi1 / hh - 1;
        double factorial = 1;
        var bh = bh1 ? hh : hPhi1;
        var r = new double[order, rks.Length];
        var b = new double[order];
        for (var i = 1; i <= order; i++)
        {
            for (var k = 0; k < rks.Length; k++) r[i - 1, k] = Math.Pow(rks[k], i - 1);
            b[i - 1] = hPhiK * factorial / bh;
            factorial *= i + 1;
            hPhiK = hPhiK / hh - 1 / factorial;
        }
        return (r, b, hPhi1, bh);
    }

    /// <summary>UniP: the multistep predictor from the current sample to the next timestep.</summary>
    private Tensor Predictor(Tensor x, int order, int index)
    {
        var sigmaTNext = SigmaValues[index + 1];
        var sigmaS0 = SigmaValues[index];
        var (alphaT, sigmaT) = AlphaSigma(sigmaTNext);
        var (alphaS0, sigmaS0T) = AlphaSigma(sigmaS0);
        var lambdaS0 = Lambda(sigmaS0);
        var h = Lambda(sigmaTNext) - lambdaS0;
        var m0 = modelOutputs[^1]!;

        var rks = new List<double>();
        var d1s = new List<Tensor>();
        for (var i = 1; i < order; i++)
        {
            var rk = (Lambda(SigmaValues[index - i]) - lambdaS0) / h;
            rks.Add(rk);
            d1s.Add((modelOutputs[^(i + 1)]! - m0) / rk);
        }
        rks.Add(1.0);
        var (r, b, hPhi1, bh) = Coefficients(h, [.. rks], order);

        Tensor? predRes = null;
        if (d1s.Count > 0)
        {
            double[] rhos;
            if (order == 2) rhos = [0.5];
            else
            {
                var k = order - 1;
                var sub = new double[k, k];
                for (var i = 0; i < k; i++) for (var j = 0; j < k; j++) sub[i, j] = r[i, j];
                rhos = ScheduleMath.Solve(sub, b[..k]);
            }
            predRes = WeightedSum(rhos, d1s);
        }
        var (first, scale) = predictX0
            ? (sigmaT / sigmaS0T * x - alphaT * hPhi1 * m0, alphaT * bh)
            : (alphaT / alphaS0 * x - sigmaT * hPhi1 * m0, sigmaT * bh);
        // Without history (order 1) there is no correction term. diffusers multiplies B(h) by a 0
        // there, which is NaN for bh1 at a final σ of 0 (B(h) = h = −∞); skipping it gives x₀.
        return predRes is null ? first : first - scale * predRes;
    }

    /// <summary>UniC: corrects the sample just predicted, using the model output at it.</summary>
    private Tensor Corrector(Tensor thisModelOutput, Tensor last, int order, int index)
    {
        var (alphaT, sigmaT) = AlphaSigma(SigmaValues[index]);
        var (alphaS0, sigmaS0) = AlphaSigma(SigmaValues[index - 1]);
        var lambdaS0 = Lambda(SigmaValues[index - 1]);
        var h = Lambda(SigmaValues[index]) - lambdaS0;
        var m0 = modelOutputs[^1]!;

        var rks = new List<double>();
        var d1s = new List<Tensor>();
        for (var i = 1; i < order; i++)
        {
            var rk = (Lambda(SigmaValues[index - (i + 1)]) - lambdaS0) / h;
            rks.Add(rk);
            d1s.Add((modelOutputs[^(i + 1)]! - m0) / rk);
        }
        rks.Add(1.0);
        var (r, b, hPhi1, bh) = Coefficients(h, [.. rks], order);
        double[] rhos = order == 1 ? [0.5] : ScheduleMath.Solve(r, b);

        var (first, scale) = predictX0
            ? (sigmaT / sigmaS0 * last - alphaT * hPhi1 * m0, alphaT * bh)
            : (alphaT / alphaS0 * last - sigmaT * hPhi1 * m0, sigmaT * bh);
        var d1t = thisModelOutput - m0;
        var correction = d1s.Count > 0 ? WeightedSum(rhos[..^1], d1s) + rhos[^1] * d1t : rhos[^1] * d1t;
        return first - scale * correction;
    }

    private static Tensor WeightedSum(double[] weights, List<Tensor> tensors)
    {
        var sum = weights[0] * tensors[0];
        for (var k = 1; k < tensors.Count; k++) sum = sum + weights[k] * tensors[k];
        return sum;
    }

    /// <summary>img2img noising in this solver's parameterisation: α_t·x₀ + σ_t·ε.</summary>
    public override Tensor AddNoise(Tensor originalSamples, Tensor noise, Tensor timesteps) =>
        AddNoiseVariancePreserving(originalSamples, noise, timesteps);

    private void ResetState()
    {
        foreach (var m in modelOutputs) m?.Dispose();
        modelOutputs = new Tensor?[solverOrder];
        lowerOrderNums = 0;
        thisOrder = 0;
        lastSample?.Dispose();
        lastSample = null;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) ResetState();
        base.Dispose(disposing);
    }
}
