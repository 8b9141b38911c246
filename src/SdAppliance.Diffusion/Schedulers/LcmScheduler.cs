using SdAppliance.Torch;

namespace SdAppliance.Diffusion.Schedulers;

/// <summary>
/// Latent consistency model sampling (Luo et al. 2023), diffusers' <c>LCMScheduler</c>: each step
/// maps x_t to the consistency function's "denoised" estimate c_skip·x_t + c_out·x̂₀ and, except at
/// the last step, re-noises it to the next timestep with fresh noise. Its timesteps come from the
/// distillation grid (<c>original_inference_steps</c>), not from <c>timestep_spacing</c>.
/// </summary>
public sealed class LcmScheduler : Scheduler
{
    /// <summary>diffusers' constructor defaults.</summary>
    public static readonly SchedulerConfig Defaults = new()
    {
        NumTrainTimesteps = 1000, BetaStart = 0.00085, BetaEnd = 0.012, BetaSchedule = "scaled_linear",
        OriginalInferenceSteps = 50, ClipSample = false, ClipSampleRange = 1.0, SetAlphaToOne = true,
        StepsOffset = 0, PredictionType = "epsilon", Thresholding = false, DynamicThresholdingRatio = 0.995,
        SampleMaxValue = 1.0, TimestepSpacing = "leading", TimestepScaling = 10.0, RescaleBetasZeroSnr = false,
    };

    private const double SigmaData = 0.5;
    private readonly double finalAlphaCumprod;

    public LcmScheduler(SchedulerConfig? config = null) : base(config ?? new(), Defaults)
    {
        CheckPrediction("epsilon", "v_prediction", "sample");
        finalAlphaCumprod = Config.SetAlphaToOne == true ? 1.0 : AlphasCumprodValues[0];
    }

    public override void SetTimesteps(int numInferenceSteps, Device? device = null) =>
        SetTimesteps(numInferenceSteps, device, null, 1.0);

    /// <summary>
    /// <paramref name="numInferenceSteps"/> timesteps spread over the first
    /// ⌊original_inference_steps·strength⌋ points of the distillation grid (img2img passes strength &lt; 1).
    /// </summary>
    public void SetTimesteps(int numInferenceSteps, Device? device, int? originalInferenceSteps, double strength)
    {
        var originalSteps = originalInferenceSteps ?? Config.OriginalInferenceSteps ?? 50;
        if (originalSteps > NumTrainTimesteps)
            throw new ArgumentOutOfRangeException(nameof(originalInferenceSteps), $"original_inference_steps {originalSteps} exceeds num_train_timesteps {NumTrainTimesteps}");
        if (numInferenceSteps < 1 || numInferenceSteps > NumTrainTimesteps)
            throw new ArgumentOutOfRangeException(nameof(numInferenceSteps), $"must be in [1, {NumTrainTimesteps}]");
        var k = NumTrainTimesteps / originalSteps;
        var count = (int)(originalSteps * strength);
        // The grid k−1, 2k−1, …, descending.
        var origin = Enumerable.Range(1, count).Select(i => (long)i * k - 1).Reverse().ToArray();
        if (origin.Length / numInferenceSteps < 1)
            throw new ArgumentException($"{numInferenceSteps} steps need at least as many grid points; original_inference_steps·strength gives {origin.Length}");
        if (numInferenceSteps > originalSteps)
            throw new ArgumentException($"{numInferenceSteps} steps exceed original_inference_steps {originalSteps}");
        NumInferenceSteps = numInferenceSteps;
        var idx = ScheduleMath.Linspace(0, origin.Length, numInferenceSteps + 1)[..^1]; // endpoint=False
        var ts = idx.Select(i => (double)origin[(long)Math.Floor(i)]).ToArray();
        SetSchedule(ts, DType.Int64, device, null);
    }

    public override SchedulerOutput Step(Tensor modelOutput, double timestep, Tensor sample, NoiseSource? noise = null)
    {
        var steps = NumInferenceSteps ?? throw NotReady();
        var index = InitStepIndex(timestep);
        var t = TrainIndex(timestep);
        var prevT = index + 1 < TimestepValues.Count ? (int)TimestepValues[index + 1] : t;
        double alphaProd = AlphasCumprodValues[t];
        var alphaProdPrev = prevT >= 0 ? AlphasCumprodValues[prevT] : finalAlphaCumprod;
        var betaProdPrev = 1 - alphaProdPrev;

        // Boundary-condition scalings of the consistency function.
        var scaled = t * (Config.TimestepScaling ?? 10.0);
        var cSkip = SigmaData * SigmaData / (scaled * scaled + SigmaData * SigmaData);
        var cOut = scaled / Math.Sqrt(scaled * scaled + SigmaData * SigmaData);

        using var scope = torch.NewDisposeScope();
        var mo = Upcast(modelOutput);
        var x = Upcast(sample);
        var x0 = ClipOriginal(PredictOriginal(mo, x, alphaProd));
        var denoised = cOut * x0 + cSkip * x;
        Tensor prev;
        if (index != steps - 1)
        {
            var z = (noise ?? NoiseSource.Default).Randn(mo.Shape, modelOutput.DType, modelOutput.Device);
            prev = Math.Sqrt(alphaProdPrev) * denoised + Math.Sqrt(betaProdPrev) * z;
        }
        else
        {
            prev = denoised.Alias();
        }
        StepIndex = index + 1;
        return new SchedulerOutput(CastLike(prev, modelOutput).MoveToOuterScope(), CastLike(denoised, modelOutput).MoveToOuterScope());
    }
}
