using SdAppliance.Torch;

namespace SdAppliance.Diffusion.Schedulers;

/// <summary>
/// Ancestral Euler (k-diffusion's <c>sample_euler_ancestral</c> with η = 1), diffusers'
/// <c>EulerAncestralDiscreteScheduler</c> and A1111's "Euler a": an Euler step down to σ_down, then
/// fresh noise of σ_up, with σ_down² + σ_up² = σ_next². It draws one noise tensor every step.
/// </summary>
public sealed class EulerAncestralDiscreteScheduler : SigmaScheduler
{
    /// <summary>diffusers' constructor defaults.</summary>
    public static readonly SchedulerConfig Defaults = new()
    {
        NumTrainTimesteps = 1000, BetaStart = 0.0001, BetaEnd = 0.02, BetaSchedule = "linear",
        PredictionType = "epsilon", TimestepSpacing = "linspace", StepsOffset = 0, RescaleBetasZeroSnr = false,
    };

    public EulerAncestralDiscreteScheduler(SchedulerConfig? config = null) : base(config ?? new(), Defaults, tinyTerminalAlpha: true)
    {
        CheckPrediction("epsilon", "v_prediction");
    }

    public override double InitNoiseSigma => EulerInitNoiseSigma();

    public override void SetTimesteps(int numInferenceSteps, Device? device = null)
    {
        if (numInferenceSteps < 1) throw new ArgumentOutOfRangeException(nameof(numInferenceSteps));
        NumInferenceSteps = numInferenceSteps;
        var ts = ScheduleMath.Spacing(Config.TimestepSpacing!, NumTrainTimesteps, numInferenceSteps, Config.StepsOffset ?? 0, roundLinspace: false);
        double[] sigmas = [.. ts.Select(t => ScheduleMath.Interp(t, TrainSigmaTable)), 0.0];
        SetSigmaSchedule(ts, DType.Float32, device, sigmas);
    }

    public override Tensor ScaleModelInput(Tensor sample, double timestep) =>
        ScaleBySigma(sample, SigmaValues[InitStepIndex(timestep)]);

    public override SchedulerOutput Step(Tensor modelOutput, double timestep, Tensor sample, NoiseSource? noise = null)
    {
        if (NumInferenceSteps is null) throw NotReady();
        var index = InitStepIndex(timestep);
        var sigmaFrom = SigmaValues[index];
        var sigmaTo = SigmaValues[index + 1];
        var sigmaUp = Math.Sqrt(sigmaTo * sigmaTo * (sigmaFrom * sigmaFrom - sigmaTo * sigmaTo) / (sigmaFrom * sigmaFrom));
        var sigmaDown = Math.Sqrt(sigmaTo * sigmaTo - sigmaUp * sigmaUp);

        using var scope = torch.NewDisposeScope();
        var mo = Upcast(modelOutput);
        var x = Upcast(sample);
        var x0 = PredictOriginalSigma(mo, x, sigmaFrom);
        var derivative = (x - x0) / sigmaFrom;
        var prev = x + derivative * (sigmaDown - sigmaFrom);
        var z = (noise ?? NoiseSource.Default).Randn(modelOutput.Shape, modelOutput.DType, modelOutput.Device);
        prev = prev + z * sigmaUp;
        StepIndex = index + 1;
        return new SchedulerOutput(CastLike(prev, modelOutput).MoveToOuterScope(), x0.MoveToOuterScope());
    }
}
