using SdAppliance.Torch;

namespace SdAppliance.Diffusion.Schedulers;

/// <summary>
/// DPM-Solver / DPM-Solver++ multistep (Lu et al. 2022), diffusers'
/// <c>DPMSolverMultistepScheduler</c>. With <c>algorithm_type dpmsolver++</c> and
/// <c>solver_order 2</c> it is A1111's "DPM++ 2M" (with <c>use_karras_sigmas</c>, "DPM++ 2M Karras");
/// the SDE variants add noise each step. Works in λ = ln(α/σ) with α = 1/√(σ²+1), σ_t = σ·α.
/// </summary>
public sealed class DpmSolverMultistepScheduler : SigmaScheduler
{
    /// <summary>diffusers' constructor defaults.</summary>
    public static readonly SchedulerConfig Defaults = new()
    {
        NumTrainTimesteps = 1000, BetaStart = 0.0001, BetaEnd = 0.02, BetaSchedule = "linear",
        SolverOrder = 2, PredictionType = "epsilon", Thresholding = false, DynamicThresholdingRatio = 0.995,
        SampleMaxValue = 1.0, AlgorithmType = "dpmsolver++", SolverType = "midpoint", LowerOrderFinal = true,
        EulerAtFinal = false, UseKarrasSigmas = false, UseExponentialSigmas = false, UseBetaSigmas = false,
        UseLuLambdas = false, UseFlowSigmas = false, FlowShift = 1.0, FinalSigmasType = "zero",
        LambdaMinClipped = double.NegativeInfinity, TimestepSpacing = "linspace", StepsOffset = 0,
        RescaleBetasZeroSnr = false, UseDynamicShifting = false, TimeShiftType = "exponential",
    };

    private readonly string algorithm;
    private readonly string solverType;
    private readonly int solverOrder;
    private Tensor?[] modelOutputs;
    private int lowerOrderNums;

    public DpmSolverMultistepScheduler(SchedulerConfig? config = null)
        : base(Normalize(config ?? new()), Defaults, tinyTerminalAlpha: true)
    {
        CheckPrediction("epsilon", "v_prediction", "sample");
        CheckSigmaShapes();
        algorithm = Config.AlgorithmType!;
        solverType = Config.SolverType!;
        solverOrder = Config.SolverOrder ?? 2;
        if (algorithm is not ("dpmsolver++" or "dpmsolver" or "sde-dpmsolver++" or "sde-dpmsolver"))
            throw new NotSupportedException($"algorithm_type '{algorithm}' is not supported (dpmsolver++, sde-dpmsolver++, dpmsolver, sde-dpmsolver)");
        if (solverType is not ("midpoint" or "heun"))
            throw new NotSupportedException($"solver_type '{solverType}' is not supported (midpoint, heun)");
        if (solverOrder is < 1 or > 3) throw new NotSupportedException($"solver_order {solverOrder} is not supported (1, 2, 3)");
        if (algorithm is "dpmsolver" or "sde-dpmsolver" && Config.FinalSigmasType == "zero")
            throw new ArgumentException($"final_sigmas_type 'zero' is not supported with algorithm_type '{algorithm}': use sigma_min");
        if (Config.UseFlowSigmas == true || Config.UseDynamicShifting == true)
            throw new NotSupportedException("flow-matching sigmas are not supported");
        modelOutputs = new Tensor?[solverOrder];
    }

    /// <summary>diffusers maps the names of its sibling solvers onto its own (e.g. a UniPC config's bh2 → midpoint).</summary>
    private static SchedulerConfig Normalize(SchedulerConfig c) => c with
    {
        AlgorithmType = c.AlgorithmType == "deis" ? "dpmsolver++" : c.AlgorithmType,
        SolverType = c.SolverType is "logrho" or "bh1" or "bh2" ? "midpoint" : c.SolverType,
    };

    /// <summary>The x₀ estimate of the latest step, returned as PredOriginalSample (diffusers returns none).</summary>
    private bool PredictsX0 => algorithm is "dpmsolver++" or "sde-dpmsolver++";

    public override void SetTimesteps(int numInferenceSteps, Device? device = null)
    {
        if (numInferenceSteps < 1) throw new ArgumentOutOfRangeException(nameof(numInferenceSteps));
        var n = NumTrainTimesteps;
        // λ_min_clipped cuts the end of the schedule off where λ(t) would fall below it.
        var lambdaMin = Config.LambdaMinClipped ?? double.NegativeInfinity;
        var clipped = 0;
        for (var i = n - 1; i >= 0; i--)
        {
            var ac = AlphasCumprodValues[i];
            var lambda = MathF.Log(MathF.Sqrt(ac)) - MathF.Log(MathF.Sqrt(1f - ac));
            if (lambda < lambdaMin) clipped++;
            else break;
        }
        var lastTimestep = n - clipped;
        var ts = ScheduleMath.SpacingSkipLast(Config.TimestepSpacing!, n, lastTimestep, numInferenceSteps, Config.StepsOffset ?? 0);

        double[] sigmas;
        var table = TrainSigmaTable;
        var descending = table.Reverse().Select(s => (double)s).ToArray();
        var roundTimesteps = Config.BetaSchedule != "squaredcos_cap_v2";
        if (Config.UseKarrasSigmas == true || Config.UseExponentialSigmas == true || Config.UseBetaSigmas == true)
        {
            (sigmas, ts) = ReshapeSigmas(descending, numInferenceSteps, configBounds: true);
            if (Config.UseKarrasSigmas == true && roundTimesteps) ts = ts.Select(ScheduleMath.Round).ToArray();
        }
        else if (Config.UseLuLambdas == true)
        {
            // Uniform in λ = −ln σ between the ends of the table.
            var lambdas = LogSigmaTable.Reverse().Select(v => (double)v).ToArray();
            var ramp = ScheduleMath.Linspace(0, 1, numInferenceSteps);
            sigmas = ramp.Select(r => Math.Exp(lambdas[0] + r * (lambdas[^1] - lambdas[0]))).ToArray();
            ts = sigmas.Select(s => ScheduleMath.SigmaToT(s, LogSigmaTable)).ToArray();
            if (roundTimesteps) ts = ts.Select(ScheduleMath.Round).ToArray();
        }
        else
        {
            sigmas = ts.Select(t => ScheduleMath.Interp(t, table)).ToArray();
        }
        // int64 conversion truncates the unrounded cases, as torch's .to(int64) does.
        ts = ts.Select(Math.Truncate).ToArray();
        NumInferenceSteps = ts.Length;
        ResetState();
        SetSigmaSchedule(ts, DType.Int64, device, [.. sigmas, FinalSigma()]);
    }

    /// <summary>The model output in the solver's variable: x₀ for DPM-Solver++, ε for DPM-Solver.</summary>
    private Tensor ConvertModelOutput(Tensor modelOutput, Tensor sample, int index)
    {
        if (Config.VarianceType is "learned" or "learned_range")
            modelOutput = modelOutput.Narrow(1, 0, sample.Size(1));
        var (alphaT, sigmaT) = AlphaSigma(SigmaValues[index]);
        if (PredictsX0)
        {
            var x0 = PredictOriginalVariancePreserving(modelOutput, sample, alphaT, sigmaT);
            return Config.Thresholding == true ? ThresholdSample(x0) : x0;
        }
        var eps = PredictNoiseVariancePreserving(modelOutput, sample, alphaT, sigmaT);
        if (Config.Thresholding == true)
        {
            var x0 = ThresholdSample((sample - sigmaT * eps) / alphaT);
            eps = (sample - alphaT * x0) / sigmaT;
        }
        return eps;
    }

    public override SchedulerOutput Step(Tensor modelOutput, double timestep, Tensor sample, NoiseSource? noise = null)
    {
        if (NumInferenceSteps is null) throw NotReady();
        var index = InitStepIndex(timestep, lastWhenMissing: true);
        var count = TimestepValues.Count;
        var lowerOrderFinal = index == count - 1 &&
            (Config.EulerAtFinal == true || (Config.LowerOrderFinal == true && count < 15) || Config.FinalSigmasType == "zero");
        var lowerOrderSecond = index == count - 2 && Config.LowerOrderFinal == true && count < 15;

        using var scope = torch.NewDisposeScope();
        var mo = Upcast(modelOutput);
        var x = Upcast(sample);
        var converted = ConvertModelOutput(mo, x, index);
        modelOutputs[0]?.Dispose();
        for (var i = 0; i < solverOrder - 1; i++) modelOutputs[i] = modelOutputs[i + 1];
        modelOutputs[^1] = converted.Alias().DetachFromDisposeScope();

        Tensor? z = algorithm.StartsWith("sde-", StringComparison.Ordinal)
            ? (noise ?? NoiseSource.Default).Randn(mo.Shape, x.DType, modelOutput.Device)
            : null;

        Tensor prev;
        if (solverOrder == 1 || lowerOrderNums < 1 || lowerOrderFinal) prev = FirstOrder(converted, x, z, index);
        else if (solverOrder == 2 || lowerOrderNums < 2 || lowerOrderSecond) prev = SecondOrder(x, z, index);
        else prev = ThirdOrder(x, z, index);
        if (lowerOrderNums < solverOrder) lowerOrderNums++;
        StepIndex = index + 1;
        return new SchedulerOutput(CastLike(prev, modelOutput).MoveToOuterScope(),
            PredictsX0 ? CastLike(converted, modelOutput).MoveToOuterScope() : null);
    }

    private Tensor FirstOrder(Tensor m, Tensor x, Tensor? z, int index)
    {
        var (alphaT, sigmaT) = AlphaSigma(SigmaValues[index + 1]);
        var (alphaS, sigmaS) = AlphaSigma(SigmaValues[index]);
        var h = Lambda(SigmaValues[index + 1]) - Lambda(SigmaValues[index]);
        return algorithm switch
        {
            "dpmsolver++" => sigmaT / sigmaS * x - alphaT * (Math.Exp(-h) - 1) * m,
            "dpmsolver" => alphaT / alphaS * x - sigmaT * (Math.Exp(h) - 1) * m,
            "sde-dpmsolver++" => sigmaT / sigmaS * Math.Exp(-h) * x + alphaT * (1 - Math.Exp(-2 * h)) * m
                                 + sigmaT * Math.Sqrt(1 - Math.Exp(-2 * h)) * z!,
            _ => alphaT / alphaS * x - 2 * (sigmaT * (Math.Exp(h) - 1)) * m + sigmaT * Math.Sqrt(Math.Exp(2 * h) - 1) * z!,
        };
    }

    private Tensor SecondOrder(Tensor x, Tensor? z, int index)
    {
        var (alphaT, sigmaT) = AlphaSigma(SigmaValues[index + 1]);
        var (alphaS0, sigmaS0) = AlphaSigma(SigmaValues[index]);
        var lambdaT = Lambda(SigmaValues[index + 1]);
        var lambdaS0 = Lambda(SigmaValues[index]);
        var lambdaS1 = Lambda(SigmaValues[index - 1]);
        var m0 = modelOutputs[^1]!;
        var m1 = modelOutputs[^2]!;
        var h = lambdaT - lambdaS0;
        var r0 = (lambdaS0 - lambdaS1) / h;
        var d0 = m0;
        var d1 = 1.0 / r0 * (m0 - m1);
        var heun = solverType == "heun";
        return algorithm switch
        {
            "dpmsolver++" => heun
                ? sigmaT / sigmaS0 * x - alphaT * (Math.Exp(-h) - 1) * d0 + alphaT * ((Math.Exp(-h) - 1) / h + 1) * d1
                : sigmaT / sigmaS0 * x - alphaT * (Math.Exp(-h) - 1) * d0 - 0.5 * (alphaT * (Math.Exp(-h) - 1)) * d1,
            "dpmsolver" => heun
                ? alphaT / alphaS0 * x - sigmaT * (Math.Exp(h) - 1) * d0 - sigmaT * ((Math.Exp(h) - 1) / h - 1) * d1
                : alphaT / alphaS0 * x - sigmaT * (Math.Exp(h) - 1) * d0 - 0.5 * (sigmaT * (Math.Exp(h) - 1)) * d1,
            "sde-dpmsolver++" => heun
                ? sigmaT / sigmaS0 * Math.Exp(-h) * x + alphaT * (1 - Math.Exp(-2 * h)) * d0
                  + alphaT * ((1 - Math.Exp(-2 * h)) / (-2 * h) + 1) * d1 + sigmaT * Math.Sqrt(1 - Math.Exp(-2 * h)) * z!
                : sigmaT / sigmaS0 * Math.Exp(-h) * x + alphaT * (1 - Math.Exp(-2 * h)) * d0
                  + 0.5 * (alphaT * (1 - Math.Exp(-2 * h))) * d1 + sigmaT * Math.Sqrt(1 - Math.Exp(-2 * h)) * z!,
            _ => heun
                ? alphaT / alphaS0 * x - 2 * (sigmaT * (Math.Exp(h) - 1)) * d0
                  - 2 * (sigmaT * ((Math.Exp(h) - 1) / h - 1)) * d1 + sigmaT * Math.Sqrt(Math.Exp(2 * h) - 1) * z!
                : alphaT / alphaS0 * x - 2 * (sigmaT * (Math.Exp(h) - 1)) * d0
                  - sigmaT * (Math.Exp(h) - 1) * d1 + sigmaT * Math.Sqrt(Math.Exp(2 * h) - 1) * z!,
        };
    }

    private Tensor ThirdOrder(Tensor x, Tensor? z, int index)
    {
        var (alphaT, sigmaT) = AlphaSigma(SigmaValues[index + 1]);
        var (alphaS0, sigmaS0) = AlphaSigma(SigmaValues[index]);
        var lambdaT = Lambda(SigmaValues[index + 1]);
        var lambdaS0 = Lambda(SigmaValues[index]);
        var lambdaS1 = Lambda(SigmaValues[index - 1]);
        var lambdaS2 = Lambda(SigmaValues[index - 2]);
        var m0 = modelOutputs[^1]!;
        var m1 = modelOutputs[^2]!;
        var m2 = modelOutputs[^3]!;
        var h = lambdaT - lambdaS0;
        var r0 = (lambdaS0 - lambdaS1) / h;
        var r1 = (lambdaS1 - lambdaS2) / h;
        var d10 = 1.0 / r0 * (m0 - m1);
        var d11 = 1.0 / r1 * (m1 - m2);
        var d1 = d10 + r0 / (r0 + r1) * (d10 - d11);
        var d2 = 1.0 / (r0 + r1) * (d10 - d11);
        return algorithm switch
        {
            "dpmsolver++" => sigmaT / sigmaS0 * x - alphaT * (Math.Exp(-h) - 1) * m0
                             + alphaT * ((Math.Exp(-h) - 1) / h + 1) * d1
                             - alphaT * ((Math.Exp(-h) - 1 + h) / (h * h) - 0.5) * d2,
            "dpmsolver" => alphaT / alphaS0 * x - sigmaT * (Math.Exp(h) - 1) * m0
                           - sigmaT * ((Math.Exp(h) - 1) / h - 1) * d1
                           - sigmaT * ((Math.Exp(h) - 1 - h) / (h * h) - 0.5) * d2,
            "sde-dpmsolver++" => sigmaT / sigmaS0 * Math.Exp(-h) * x + alphaT * (1 - Math.Exp(-2 * h)) * m0
                                 + alphaT * ((1 - Math.Exp(-2 * h)) / (-2 * h) + 1) * d1
                                 + alphaT * ((1 - Math.Exp(-2 * h) - 2 * h) / (4 * h * h) - 0.5) * d2
                                 + sigmaT * Math.Sqrt(1 - Math.Exp(-2 * h)) * z!,
            _ => throw new NotSupportedException($"solver_order 3 is not available for algorithm_type '{algorithm}'"),
        };
    }

    /// <summary>img2img noising in this solver's parameterisation: α_t·x₀ + σ_t·ε.</summary>
    public override Tensor AddNoise(Tensor originalSamples, Tensor noise, Tensor timesteps) =>
        AddNoiseVariancePreserving(originalSamples, noise, timesteps);

    private void ResetState()
    {
        foreach (var m in modelOutputs) m?.Dispose();
        modelOutputs = new Tensor?[solverOrder];
        lowerOrderNums = 0;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) ResetState();
        base.Dispose(disposing);
    }
}
