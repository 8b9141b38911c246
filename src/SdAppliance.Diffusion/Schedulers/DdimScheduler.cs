using SdAppliance.Torch;

namespace SdAppliance.Diffusion.Schedulers;

/// <summary>
/// DDIM (Song et al. 2020), diffusers' <c>DDIMScheduler</c>: deterministic for
/// <see cref="Eta"/> = 0 (what pipelines pass), DDPM-like noise for η = 1.
/// </summary>
public sealed class DdimScheduler : Scheduler
{
    /// <summary>diffusers' constructor defaults.</summary>
    public static readonly SchedulerConfig Defaults = new()
    {
        NumTrainTimesteps = 1000, BetaStart = 0.0001, BetaEnd = 0.02, BetaSchedule = "linear",
        ClipSample = true, SetAlphaToOne = true, StepsOffset = 0, PredictionType = "epsilon",
        Thresholding = false, DynamicThresholdingRatio = 0.995, ClipSampleRange = 1.0, SampleMaxValue = 1.0,
        TimestepSpacing = "leading", RescaleBetasZeroSnr = false,
    };

    private readonly double finalAlphaCumprod;

    public DdimScheduler(SchedulerConfig? config = null) : base(config ?? new(), Defaults)
    {
        CheckPrediction("epsilon", "v_prediction", "sample");
        finalAlphaCumprod = Config.SetAlphaToOne == true ? 1.0 : AlphasCumprodValues[0];
    }

    /// <summary>η of the DDIM paper: the weight of fresh noise in each step (0 = deterministic).</summary>
    public double Eta { get; set; }

    /// <summary>Re-derive ε from the clipped x₀ (diffusers' <c>use_clipped_model_output</c>).</summary>
    public bool UseClippedModelOutput { get; set; }

    public override void SetTimesteps(int numInferenceSteps, Device? device = null) => SetIntegerTimesteps(numInferenceSteps, device);

    public override SchedulerOutput Step(Tensor modelOutput, double timestep, Tensor sample, NoiseSource? noise = null)
    {
        var steps = NumInferenceSteps ?? throw NotReady();
        var t = TrainIndex(timestep);
        // diffusers steps back by the leading stride whatever the spacing.
        var prevT = t - NumTrainTimesteps / steps;
        double alphaProd = AlphasCumprodValues[t];
        var alphaProdPrev = prevT >= 0 ? AlphasCumprodValues[prevT] : finalAlphaCumprod;
        var betaProd = 1 - alphaProd;

        using var scope = torch.NewDisposeScope();
        var mo = Upcast(modelOutput);
        var x = Upcast(sample);
        var x0 = PredictOriginal(mo, x, alphaProd);
        var eps = PredictionType switch
        {
            "epsilon" => mo,
            "sample" => (x - Math.Sqrt(alphaProd) * x0) / Math.Sqrt(betaProd),
            _ => Math.Sqrt(alphaProd) * mo + Math.Sqrt(betaProd) * x,
        };
        x0 = ClipOriginal(x0);

        var variance = (1 - alphaProdPrev) / betaProd * (1 - alphaProd / alphaProdPrev);
        var stdDev = Eta * Math.Sqrt(variance);
        if (UseClippedModelOutput) eps = (x - Math.Sqrt(alphaProd) * x0) / Math.Sqrt(betaProd);
        var prev = Math.Sqrt(alphaProdPrev) * x0 + Math.Sqrt(1 - alphaProdPrev - stdDev * stdDev) * eps;
        if (Eta > 0)
        {
            var z = (noise ?? NoiseSource.Default).Randn(modelOutput.Shape, modelOutput.DType, modelOutput.Device);
            prev = prev + stdDev * z;
        }
        return new SchedulerOutput(CastLike(prev, modelOutput).MoveToOuterScope(), CastLike(x0, modelOutput).MoveToOuterScope());
    }
}
