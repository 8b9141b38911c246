using SdAppliance.Diffusion.Schedulers;
using SdAppliance.Torch;

namespace SdAppliance.Training;

/// <summary>
/// kohya sd-scripts' loss options, formula for formula: the per-pixel losses of <c>conditional_loss</c> (l2, l1, huber,
/// smooth_l1), their threshold per timestep (<c>get_huber_threshold_if_needed</c>), pyramid noise
/// (<c>pyramid_noise_like</c>), the loss mask (<c>apply_masked_loss</c>), the SNR scale of v-prediction
/// (<c>get_snr_scale</c>) and the zero-terminal-SNR training schedule.
/// </summary>
public static class Losses
{
    /// <summary>
    /// kohya's <c>get_huber_threshold_if_needed</c>: the threshold c of each example from its timestep, or null for l2 and l1.
    /// constant: c·scale; exponential: exp(−α·t)·scale with α = −ln(c) / T (so c·scale at t = T); snr: (1 − c) / (1 + σ_t)² + c
    /// with σ_t = √((1 − ᾱ_t) / ᾱ_t) (kohya does not scale this one). Computed in float32, as kohya's tensors are.
    /// </summary>
    public static float[]? HuberThresholds(LossKind loss, HuberScheduleKind schedule, double huberC, double huberScale, IReadOnlyList<float> alphasCumprod,
        int numTrainTimesteps, IReadOnlyList<long> timesteps)
    {
        if (loss is not (LossKind.Huber or LossKind.SmoothL1)) return null;
        var result = new float[timesteps.Count];
        var c = (float)huberC;
        var alpha = (float)(-Math.Log(huberC) / numTrainTimesteps);
        for (var i = 0; i < result.Length; i++)
        {
            var t = timesteps[i];
            result[i] = schedule switch
            {
                HuberScheduleKind.Constant => (float)(huberC * huberScale),
                HuberScheduleKind.Exponential => MathF.Exp(-alpha * t) * (float)huberScale,
                _ => SnrThreshold(alphasCumprod[(int)t], c),
            };
        }
        return result;

        static float SnrThreshold(float alphaCumprod, float c)
        {
            var sigma = MathF.Sqrt((1f - alphaCumprod) / alphaCumprod);
            var onePlus = 1f + sigma;
            return (1f - c) / (onePlus * onePlus) + c;
        }
    }

    /// <summary>
    /// kohya's <c>conditional_loss</c> without reduction: per element (x = prediction − target) l2 x², l1 |x|, huber
    /// 2c(√(x² + c²) − c), smooth_l1 2(√(x² + c²) − c), with <paramref name="huberC"/> one threshold per example ([B]).
    /// </summary>
    public static Tensor Elementwise(Tensor prediction, Tensor target, LossKind loss, Tensor? huberC = null)
    {
        switch (loss)
        {
            case LossKind.L2:
                return Functional.MseLoss(prediction, target, "none");
            case LossKind.L1:
                return (prediction - target).Abs();
        }
        if (huberC is null) throw new ArgumentException("huber and smooth_l1 need the per-example threshold", nameof(huberC));
        using var scope = torch.NewDisposeScope();
        var shape = new long[prediction.Dim];
        Array.Fill(shape, 1L);
        shape[0] = -1;
        var c = huberC.To(prediction.Device, prediction.DType).View(shape);
        var root = ((prediction - target).Square() + c.Square()).Sqrt() - c;
        return (loss == LossKind.Huber ? 2 * c * root : 2 * root).MoveToOuterScope();
    }

    /// <summary>
    /// Each example's loss ([B]): <see cref="Elementwise"/>, times <paramref name="mask"/> ([B, 1, h, w], kohya's
    /// <c>apply_masked_loss</c>: multiplied, not renormalised) when given, then the mean over every other dimension.
    /// </summary>
    public static Tensor PerExample(Tensor prediction, Tensor target, LossKind loss, Tensor? huberC = null, Tensor? mask = null)
    {
        using var scope = torch.NewDisposeScope();
        var elementwise = Elementwise(prediction, target, loss, huberC);
        if (mask is not null) elementwise = elementwise * mask.To(elementwise.Device, elementwise.DType);
        return elementwise.Mean([.. Enumerable.Range(1, (int)elementwise.Dim - 1).Select(d => (long)d)]).MoveToOuterScope();
    }

    /// <summary>
    /// kohya's <c>pyramid_noise_like</c>: for i = 0, 1, …, <paramref name="iterations"/> − 1, a factor r in [2, 4), noise of
    /// ⌊H / rⁱ⌋ × ⌊W / rⁱ⌋ (at least 1) upsampled bilinearly to H × W and weighted by discountⁱ is added; it stops after a
    /// 1-pixel side; the sum is divided by its standard deviation. r and the noise come from <paramref name="generator"/>
    /// (kohya draws r from Python's <c>random</c>; here it is the run's saved generator, so a resumed run draws the same), on
    /// the CPU, then moved to the noise's device.
    /// </summary>
    public static Tensor PyramidNoise(Tensor noise, int iterations, double discount, Generator generator)
    {
        using var scope = torch.NewDisposeScope();
        long b = noise.Size(0), c = noise.Size(1), h = noise.Size(2), w = noise.Size(3);
        var sum = noise;
        for (var i = 0; i < iterations; i++)
        {
            using var draw = torch.Rand([1], generator);
            var r = draw.Item() * 2 + 2;
            var hn = Math.Max(1, (long)(h / Math.Pow(r, i)));
            var wn = Math.Max(1, (long)(w / Math.Pow(r, i)));
            var layer = torch.Randn([b, c, hn, wn], generator).To(noise.Device, noise.DType);
            sum = sum + Functional.Interpolate(layer, [h, w], mode: "bilinear", alignCorners: false) * Math.Pow(discount, i);
            if (hn == 1 || wn == 1) break;
        }
        return (sum / sum.Std()).MoveToOuterScope();
    }

    /// <summary>kohya's <c>get_snr_scale</c> for scale_v_pred_loss_like_noise_pred: SNR / (SNR + 1), the SNR capped at 1000.</summary>
    public static double VPredictionScale(double alphaCumprod)
    {
        var snr = Math.Min(alphaCumprod / (1 - alphaCumprod), 1000);
        return snr / (snr + 1);
    }

    /// <summary>
    /// The scheduler training noises with: the model's own (from its scheduler config), or with
    /// <paramref name="zeroTerminalSnr"/> diffusers' DDPM (the training scheduler kohya uses) on the same betas rescaled to zero
    /// terminal SNR (<c>rescale_zero_terminal_snr</c>): ᾱ at the last timestep is 0, at the first as before.
    /// </summary>
    public static Scheduler TrainingScheduler(string schedulerConfigJson, bool zeroTerminalSnr)
    {
        var config = SchedulerConfig.FromJson(schedulerConfigJson);
        return zeroTerminalSnr
            ? SchedulerRegistry.FromConfig("DDPMScheduler", config, new SchedulerConfig { RescaleBetasZeroSnr = true })
            : SchedulerRegistry.FromConfig(config);
    }
}
