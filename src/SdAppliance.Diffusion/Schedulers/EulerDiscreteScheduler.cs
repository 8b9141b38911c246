using SdAppliance.Torch;

namespace SdAppliance.Diffusion.Schedulers;

/// <summary>
/// Euler's method on the probability-flow ODE (Karras et al. 2022, algorithm 2), diffusers'
/// <c>EulerDiscreteScheduler</c> and A1111's "Euler". With <see cref="SChurn"/> &gt; 0 it adds
/// Karras' stochastic churn; by default it is deterministic.
/// </summary>
public sealed class EulerDiscreteScheduler : SigmaScheduler
{
    /// <summary>diffusers' constructor defaults.</summary>
    public static readonly SchedulerConfig Defaults = new()
    {
        NumTrainTimesteps = 1000, BetaStart = 0.0001, BetaEnd = 0.02, BetaSchedule = "linear",
        PredictionType = "epsilon", InterpolationType = "linear", UseKarrasSigmas = false,
        UseExponentialSigmas = false, UseBetaSigmas = false, TimestepSpacing = "linspace",
        TimestepType = "discrete", StepsOffset = 0, RescaleBetasZeroSnr = false, FinalSigmasType = "zero",
    };

    public EulerDiscreteScheduler(SchedulerConfig? config = null) : base(config ?? new(), Defaults, tinyTerminalAlpha: true)
    {
        CheckPrediction("epsilon", "v_prediction", "sample");
        CheckSigmaShapes();
        if (Config.InterpolationType != "linear")
            throw new NotSupportedException($"interpolation_type '{Config.InterpolationType}' is not supported (linear)");
    }

    /// <summary>Karras' S_churn (0 = deterministic).</summary>
    public double SChurn { get; set; }

    public double STmin { get; set; }

    public double STmax { get; set; } = double.PositiveInfinity;

    public double SNoise { get; set; } = 1.0;

    public override double InitNoiseSigma => EulerInitNoiseSigma();

    private bool ContinuousV => Config.TimestepType == "continuous" && PredictionType == "v_prediction";

    public override void SetTimesteps(int numInferenceSteps, Device? device = null)
    {
        if (numInferenceSteps < 1) throw new ArgumentOutOfRangeException(nameof(numInferenceSteps));
        NumInferenceSteps = numInferenceSteps;
        var ts = ScheduleMath.Spacing(Config.TimestepSpacing!, NumTrainTimesteps, numInferenceSteps, Config.StepsOffset ?? 0, roundLinspace: false);
        var sigmas = ts.Select(t => ScheduleMath.Interp(t, TrainSigmaTable)).ToArray();
        var (reshaped, reshapedTs) = ReshapeSigmas(sigmas, numInferenceSteps, configBounds: true);
        if (reshapedTs.Length > 0) (sigmas, ts) = (reshaped, reshapedTs);
        sigmas = [.. sigmas, FinalSigma()];
        if (ContinuousV) ts = sigmas[..^1].Select(s => (double)(0.25f * MathF.Log((float)s))).ToArray();
        SetSigmaSchedule(ts, DType.Float32, device, sigmas);
    }

    public override Tensor ScaleModelInput(Tensor sample, double timestep) =>
        ScaleBySigma(sample, SigmaValues[InitStepIndex(timestep)]);

    public override SchedulerOutput Step(Tensor modelOutput, double timestep, Tensor sample, NoiseSource? noise = null)
    {
        if (NumInferenceSteps is null) throw NotReady();
        var index = InitStepIndex(timestep);
        var sigma = SigmaValues[index];
        var gamma = STmin <= sigma && sigma <= STmax ? Math.Min(SChurn / (SigmaValues.Length - 1), Math.Sqrt(2) - 1) : 0.0;
        var sigmaHat = sigma * (gamma + 1);

        using var scope = torch.NewDisposeScope();
        var mo = Upcast(modelOutput);
        var x = Upcast(sample);
        if (gamma > 0)
        {
            var eps = (noise ?? NoiseSource.Default).Randn(mo.Shape, modelOutput.DType, modelOutput.Device) * SNoise;
            x = x + eps * Math.Sqrt(sigmaHat * sigmaHat - sigma * sigma);
        }
        var x0 = PredictionType == "epsilon" ? x - sigmaHat * mo : PredictOriginalSigma(mo, x, sigma);
        var derivative = (x - x0) / sigmaHat;
        var dt = SigmaValues[index + 1] - sigmaHat;
        var prev = x + derivative * dt;
        StepIndex = index + 1;
        return new SchedulerOutput(CastLike(prev, modelOutput).MoveToOuterScope(), x0.MoveToOuterScope());
    }
}
