using SdAppliance.Torch;

namespace SdAppliance.Diffusion.Schedulers;

/// <summary>What one sampler step returns: the sample for the next timestep and, where the method
/// forms one, its estimate of the clean sample x₀ (LCM: the consistency-model "denoised").</summary>
public readonly record struct SchedulerOutput(Tensor PrevSample, Tensor? PredOriginalSample);

/// <summary>
/// A diffusion sampler shaped like a diffusers scheduler: build it from a config, call
/// <see cref="SetTimesteps"/>, start from noise × <see cref="InitNoiseSigma"/>, then for each t of
/// <see cref="TimestepValues"/>: <c>x_in = ScaleModelInput(x, t)</c>, run the model, and
/// <c>x = Step(output, t, x, noise).PrevSample</c>. <see cref="AddNoise"/> and
/// <see cref="GetVelocity"/> are the forward process that training and img2img need.
/// <para>
/// The scheduler owns <see cref="Timesteps"/>, <see cref="Sigmas"/> and the model outputs it keeps
/// between steps; the tensors its methods return belong to the caller (and to the caller's dispose
/// scope). Steps compute in float32 at least (half-precision inputs are upcast; float64 stays
/// float64) and return the model output's dtype. Noise is drawn in the model output's dtype, as
/// diffusers draws it, so the same generator gives the same numbers.
/// </para>
/// </summary>
public abstract class Scheduler : IDisposable
{
    private Tensor? timesteps;
    private Tensor? sigmas;
    private double[] timestepValues = [];

    /// <param name="config">The given config (a model's scheduler_config.json plus overrides).</param>
    /// <param name="classDefaults">This class's defaults for every key it uses.</param>
    /// <param name="tinyTerminalAlpha">Whether a zero-SNR rescale pins ᾱ at the last training step to
    /// 2⁻²⁴ (the sigma schedulers do, to keep σ finite there).</param>
    protected Scheduler(SchedulerConfig config, SchedulerConfig classDefaults, bool tinyTerminalAlpha = false)
    {
        // Keys the file gives win; the class's own defaults fill the rest, as from_config does.
        Config = classDefaults.With(config);
        NumTrainTimesteps = Config.NumTrainTimesteps ?? 1000;
        PredictionType = Config.PredictionType ?? "epsilon";
        var betas = ScheduleMath.Betas(NumTrainTimesteps, Config.BetaStart ?? 0.0001, Config.BetaEnd ?? 0.02,
            Config.BetaSchedule ?? "linear", Config.TrainedBetas);
        if (Config.RescaleBetasZeroSnr == true) betas = ScheduleMath.RescaleZeroTerminalSnr(betas);
        BetaValues = betas;
        AlphasCumprodValues = ScheduleMath.AlphasCumprod(betas);
        if (Config.RescaleBetasZeroSnr == true && tinyTerminalAlpha)
            AlphasCumprodValues[^1] = MathF.Pow(2, -24);
    }

    /// <summary>The resolved config: the given keys plus this class's defaults for the rest.</summary>
    public SchedulerConfig Config { get; }

    public int NumTrainTimesteps { get; }

    /// <summary><c>epsilon</c>, <c>v_prediction</c> or <c>sample</c>.</summary>
    public string PredictionType { get; }

    /// <summary>β per training timestep (float32 values, as diffusers' <c>betas</c>).</summary>
    public IReadOnlyList<float> Betas => BetaValues;

    /// <summary>ᾱ = ∏(1 − β) per training timestep.</summary>
    public IReadOnlyList<float> AlphasCumprod => AlphasCumprodValues;

    protected float[] BetaValues { get; }

    protected float[] AlphasCumprodValues { get; }

    /// <summary>Model evaluations per timestep entry in the schedule's bookkeeping (diffusers' <c>order</c>).</summary>
    public virtual int Order => 1;

    /// <summary>The number of steps given to <see cref="SetTimesteps"/>; null before.</summary>
    public int? NumInferenceSteps { get; protected set; }

    /// <summary>The inference timesteps, owned by the scheduler (int64 or float32 as in diffusers).</summary>
    public Tensor Timesteps => timesteps ?? throw NotReady();

    /// <summary>The inference timesteps as numbers; iterate these and pass each to the model and to <see cref="Step"/>.</summary>
    public IReadOnlyList<double> TimestepValues => timesteps is null ? throw NotReady() : timestepValues;

    /// <summary>The noise levels of the schedule (CPU, float32, ending with the final sigma), for the classes that have them.</summary>
    public Tensor? Sigmas => sigmas;

    /// <summary>The standard deviation of the initial noise: multiply the unit Gaussian by it.</summary>
    public virtual double InitNoiseSigma => 1.0;

    /// <summary>The index of the next step in the schedule; null until the first step.</summary>
    public int? StepIndex { get; protected set; }

    /// <summary>The index the first step starts at (img2img), when set.</summary>
    public int? BeginIndex { get; protected set; }

    /// <summary>Starts at a given index of the schedule instead of looking the first timestep up.</summary>
    public void SetBeginIndex(int beginIndex = 0) => BeginIndex = beginIndex;

    /// <summary>Builds the inference schedule for <paramref name="numInferenceSteps"/> steps; resets all step state.</summary>
    public abstract void SetTimesteps(int numInferenceSteps, Device? device = null);

    /// <summary>The model input for timestep <paramref name="timestep"/> (a new handle even when unscaled).</summary>
    public virtual Tensor ScaleModelInput(Tensor sample, double timestep) => sample.Alias();

    /// <summary>
    /// One sampler step from <paramref name="timestep"/> to the next. <paramref name="noise"/> feeds the
    /// stochastic samplers (a <see cref="Generator"/> converts implicitly); deterministic ones ignore it.
    /// </summary>
    public abstract SchedulerOutput Step(Tensor modelOutput, double timestep, Tensor sample, NoiseSource? noise = null);

    /// <summary>
    /// The forward process q(x_t | x₀): √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε for each batch item's training
    /// timestep (the sigma schedulers override it with their own parameterisation).
    /// </summary>
    public virtual Tensor AddNoise(Tensor originalSamples, Tensor noise, Tensor timesteps)
    {
        using var scope = torch.NewDisposeScope();
        var (sqrtAlpha, sqrtOneMinusAlpha) = AlphaTerms(timesteps, originalSamples);
        return (sqrtAlpha * originalSamples + sqrtOneMinusAlpha * noise).MoveToOuterScope();
    }

    /// <summary>
    /// The v-prediction target √ᾱ_t·ε − √(1 − ᾱ_t)·x₀ at training timesteps. (diffusers' Euler
    /// indexes ᾱ by the position in the inference schedule here; we always use the training
    /// timestep, the definition the v-objective has.)
    /// </summary>
    public virtual Tensor GetVelocity(Tensor sample, Tensor noise, Tensor timesteps)
    {
        using var scope = torch.NewDisposeScope();
        var (sqrtAlpha, sqrtOneMinusAlpha) = AlphaTerms(timesteps, sample);
        return (sqrtAlpha * noise - sqrtOneMinusAlpha * sample).MoveToOuterScope();
    }

    /// <summary>√ᾱ_t and √(1 − ᾱ_t) shaped [B, 1, 1, …] to broadcast over <paramref name="like"/> (in its dtype, as diffusers casts ᾱ first).</summary>
    private (Tensor SqrtAlpha, Tensor SqrtOneMinusAlpha) AlphaTerms(Tensor timesteps, Tensor like)
    {
        var ac = torch.Tensor(AlphasCumprodValues).To(like.Device, like.DType);
        var index = timesteps.To(like.Device, DType.Int64).Flatten();
        var a = ac.IndexSelect(0, index);
        var shape = new long[like.Dim];
        Array.Fill(shape, 1L);
        shape[0] = a.NumEl;
        return (a.Pow(0.5).Reshape(shape), (1.0 - a).Pow(0.5).Reshape(shape));
    }

    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    protected virtual void Dispose(bool disposing)
    {
        if (!disposing) return;
        timesteps?.Dispose();
        sigmas?.Dispose();
        timesteps = null;
        sigmas = null;
    }

    // ---- helpers for the classes ----

    /// <summary>
    /// DDIM's and DDPM's set_timesteps: at most one step per training timestep, integer timesteps spaced
    /// as <c>timestep_spacing</c> says (linspace rounded).
    /// </summary>
    protected void SetIntegerTimesteps(int numInferenceSteps, Device? device)
    {
        if (numInferenceSteps < 1 || numInferenceSteps > NumTrainTimesteps)
            throw new ArgumentOutOfRangeException(nameof(numInferenceSteps), $"must be in [1, {NumTrainTimesteps}]");
        NumInferenceSteps = numInferenceSteps;
        var ts = ScheduleMath.Spacing(Config.TimestepSpacing!, NumTrainTimesteps, numInferenceSteps, Config.StepsOffset ?? 0, roundLinspace: true);
        SetSchedule(ts, DType.Int64, device, null);
    }

    /// <summary>Installs a new schedule (the scheduler owns the tensors it makes here).</summary>
    protected void SetSchedule(double[] values, DType timestepDType, Device? device, double[]? sigmaValues)
    {
        timesteps?.Dispose();
        sigmas?.Dispose();
        timestepValues = timestepDType switch
        {
            DType.Float32 => values.Select(v => (double)(float)v).ToArray(),
            DType.Int64 => values.Select(v => (double)(long)v).ToArray(),
            _ => values,
        };
        var dev = device ?? Device.Cpu;
        timesteps = (timestepDType switch
        {
            DType.Int64 => torch.Tensor(timestepValues.Select(v => (long)v).ToArray()),
            DType.Float32 => torch.Tensor(timestepValues.Select(v => (float)v).ToArray()),
            _ => torch.Tensor(timestepValues),
        }).DetachFromDisposeScope();
        if (dev != Device.Cpu)
        {
            var moved = timesteps.To(dev).DetachFromDisposeScope();
            timesteps.Dispose();
            timesteps = moved;
        }
        sigmas = sigmaValues is null ? null : torch.Tensor(sigmaValues.Select(s => (float)s).ToArray()).DetachFromDisposeScope();
        StepIndex = null;
        BeginIndex = null;
    }

    protected static InvalidOperationException NotReady() =>
        new("the number of inference steps is not set: call SetTimesteps first");

    /// <summary>
    /// The position of <paramref name="timestep"/> in the schedule. When it occurs twice (img2img
    /// can start on a repeated entry) diffusers takes the second, so as not to skip a sigma.
    /// </summary>
    protected int IndexForTimestep(double timestep, bool lastWhenMissing = false)
    {
        var values = TimestepValues;
        var first = -1;
        for (var i = 0; i < values.Count; i++)
        {
            if (values[i] != timestep) continue;
            if (first >= 0) return i;
            first = i;
        }
        if (first >= 0) return first;
        if (lastWhenMissing) return values.Count - 1;
        throw new ArgumentException($"timestep {timestep} is not in the schedule ({string.Join(", ", values)})", nameof(timestep));
    }

    /// <summary>Sets the step index on the first step from the begin index or the timestep.</summary>
    protected int InitStepIndex(double timestep, bool lastWhenMissing = false)
    {
        StepIndex ??= BeginIndex ?? IndexForTimestep(timestep, lastWhenMissing);
        return StepIndex.Value;
    }

    /// <summary>A training timestep as an index into ᾱ.</summary>
    protected int TrainIndex(double timestep)
    {
        var t = (long)Math.Round(timestep);
        if (t != timestep || t < 0 || t >= NumTrainTimesteps)
            throw new ArgumentException($"timestep {timestep} is not an integer training timestep in [0, {NumTrainTimesteps})", nameof(timestep));
        return (int)t;
    }

    /// <summary>The tensor in float32 at least: half-precision samples are stepped in float32 as diffusers does.</summary>
    protected static Tensor Upcast(Tensor t) => t.DType is DType.Float32 or DType.Float64 ? t.Alias() : t.To(DType.Float32);

    /// <summary>The result in <paramref name="like"/>'s dtype.</summary>
    protected static Tensor CastLike(Tensor result, Tensor like) => result.DType == like.DType ? result : result.To(like.DType);

    protected static bool IsFloat32Exact(double v) => (float)v == v;

    protected void CheckPrediction(params string[] supported)
    {
        if (!supported.Contains(PredictionType))
            throw new NotSupportedException($"{GetType().Name}: prediction_type '{PredictionType}' is not supported ({string.Join(", ", supported)})");
    }

    /// <summary>
    /// Dynamic thresholding (Saharia et al. 2022): per batch item, s = the given quantile of |x₀|
    /// clamped to [1, sample_max_value]; x₀ is clamped to [−s, s] and divided by s. The quantile is
    /// computed on the CPU (it is a pixel-space option; latent models never enable it).
    /// </summary>
    protected Tensor ThresholdSample(Tensor sample)
    {
        using var scope = torch.NewDisposeScope();
        var ratio = Config.DynamicThresholdingRatio ?? 0.995;
        var maxValue = Config.SampleMaxValue ?? 1.0;
        var batch = sample.Size(0);
        var flat = sample.To(Device.Cpu, DType.Float64).Reshape(batch, -1).Abs();
        var values = flat.ToArray<double>();
        var perItem = values.Length / (int)batch;
        var s = new double[batch];
        for (var b = 0; b < batch; b++)
        {
            var row = values.AsSpan(b * perItem, perItem).ToArray();
            Array.Sort(row);
            var pos = ratio * (perItem - 1);
            var lo = (int)Math.Floor(pos);
            var hi = Math.Min(lo + 1, perItem - 1);
            var q = row[lo] + (pos - lo) * (row[hi] - row[lo]);
            s[b] = Math.Clamp(q, 1, maxValue);
        }
        var shape = new long[sample.Dim];
        Array.Fill(shape, 1L);
        shape[0] = batch;
        var st = torch.Tensor(s).Reshape(shape).To(sample.Device, sample.DType);
        return (sample.Clamp(-st, st) / st).MoveToOuterScope();
    }

    /// <summary>x₀ from the model output of an ᾱ-parameterised sampler (DDIM, DDPM, LCM).</summary>
    protected Tensor PredictOriginal(Tensor modelOutput, Tensor sample, double alphaProd)
    {
        var betaProd = 1 - alphaProd;
        return PredictionType switch
        {
            "epsilon" => (sample - Math.Sqrt(betaProd) * modelOutput) / Math.Sqrt(alphaProd),
            "sample" => modelOutput.Alias(),
            "v_prediction" => Math.Sqrt(alphaProd) * sample - Math.Sqrt(betaProd) * modelOutput,
            _ => throw new NotSupportedException($"prediction_type '{PredictionType}' is not supported (epsilon, v_prediction, sample)"),
        };
    }

    /// <summary>Clipping or dynamic thresholding of x₀ as the config asks.</summary>
    protected Tensor ClipOriginal(Tensor x0)
    {
        if (Config.Thresholding == true) return ThresholdSample(x0);
        if (Config.ClipSample == true)
        {
            var r = Config.ClipSampleRange ?? 1.0;
            return x0.Clamp(-r, r);
        }
        return x0;
    }
}
