using SdAppliance.Torch;

namespace SdAppliance.Diffusion.Schedulers;

/// <summary>
/// DDPM ancestral sampling (Ho et al. 2020), diffusers' <c>DDPMScheduler</c>, on a strided
/// schedule: the posterior mean of x_{t'} given x₀ and x_t plus its variance's noise, drawn at
/// every step with t &gt; 0. It is also the training scheduler: <see cref="Scheduler.AddNoise"/>
/// and <see cref="Scheduler.GetVelocity"/> are the forward process.
/// </summary>
public sealed class DdpmScheduler : Scheduler
{
    /// <summary>diffusers' constructor defaults.</summary>
    public static readonly SchedulerConfig Defaults = new()
    {
        NumTrainTimesteps = 1000, BetaStart = 0.0001, BetaEnd = 0.02, BetaSchedule = "linear",
        VarianceType = "fixed_small", ClipSample = true, PredictionType = "epsilon",
        Thresholding = false, DynamicThresholdingRatio = 0.995, ClipSampleRange = 1.0, SampleMaxValue = 1.0,
        TimestepSpacing = "leading", StepsOffset = 0, RescaleBetasZeroSnr = false,
    };

    public DdpmScheduler(SchedulerConfig? config = null) : base(config ?? new(), Defaults)
    {
        CheckPrediction("epsilon", "v_prediction", "sample");
        if (Config.VarianceType is not ("fixed_small" or "fixed_small_log" or "fixed_large" or "learned" or "learned_range"))
            throw new NotSupportedException($"DDPM variance_type '{Config.VarianceType}' is not supported (fixed_small, fixed_small_log, fixed_large, learned, learned_range)");
    }

    public override void SetTimesteps(int numInferenceSteps, Device? device = null) => SetIntegerTimesteps(numInferenceSteps, device);

    /// <summary>The next timestep of the schedule, or −1 after the last.</summary>
    private int PreviousTimestep(int t)
    {
        if (NumInferenceSteps is null) return t - 1;
        var values = TimestepValues;
        for (var i = 0; i < values.Count; i++)
            if (values[i] == t) return i == values.Count - 1 ? -1 : (int)values[i + 1];
        throw new ArgumentException($"timestep {t} is not in the schedule");
    }

    public override SchedulerOutput Step(Tensor modelOutput, double timestep, Tensor sample, NoiseSource? noise = null)
    {
        var t = TrainIndex(timestep);
        var prevT = PreviousTimestep(t);
        double alphaProd = AlphasCumprodValues[t];
        double alphaProdPrev = prevT >= 0 ? AlphasCumprodValues[prevT] : 1.0;
        var betaProd = 1 - alphaProd;
        var betaProdPrev = 1 - alphaProdPrev;
        var currentAlpha = alphaProd / alphaProdPrev;
        var currentBeta = 1 - currentAlpha;

        using var scope = torch.NewDisposeScope();
        var mo = Upcast(modelOutput);
        var x = Upcast(sample);
        Tensor? predictedVariance = null;
        var variance = Config.VarianceType!;
        if (variance is "learned" or "learned_range" && mo.Size(1) == x.Size(1) * 2)
        {
            var parts = mo.Split(x.Size(1), 1);
            mo = parts[0];
            predictedVariance = parts[1];
        }

        var x0 = ClipOriginal(PredictOriginal(mo, x, alphaProd));
        var x0Coeff = Math.Sqrt(alphaProdPrev) * currentBeta / betaProd;
        var sampleCoeff = Math.Sqrt(currentAlpha) * betaProdPrev / betaProd;
        var prev = x0Coeff * x0 + sampleCoeff * x;

        if (t > 0)
        {
            var z = (noise ?? NoiseSource.Default).Randn(mo.Shape, modelOutput.DType, modelOutput.Device);
            var small = Math.Max(betaProdPrev / betaProd * currentBeta, 1e-20);
            prev = variance switch
            {
                "fixed_small" => prev + Math.Sqrt(small) * z,
                // diffusers multiplies by exp(½·ln v) here, i.e. the standard deviation.
                "fixed_small_log" => prev + Math.Exp(0.5 * Math.Log(small)) * z,
                "fixed_large" => prev + Math.Sqrt(currentBeta) * z,
                "learned" => prev + predictedVariance!.Pow(0.5) * z,
                _ => prev + ((predictedVariance! + 1) / 2 * Math.Log(currentBeta) + (1 - (predictedVariance! + 1) / 2) * Math.Log(small)).Mul(0.5).Exp() * z,
            };
        }
        return new SchedulerOutput(CastLike(prev, modelOutput).MoveToOuterScope(), CastLike(x0, modelOutput).MoveToOuterScope());
    }
}
