using SdAppliance.Torch;

namespace SdAppliance.Diffusion.Schedulers;

/// <summary>
/// The common part of the samplers that walk a sigma schedule (k-diffusion's parameterisation
/// x = x₀ + σ·ε, σ = √((1 − ᾱ)/ᾱ)): the training sigma table, the inference sigmas, the step
/// index, and the noise-adding of img2img.
/// </summary>
public abstract class SigmaScheduler : Scheduler
{
    protected SigmaScheduler(SchedulerConfig config, SchedulerConfig classDefaults, bool tinyTerminalAlpha)
        : base(config, classDefaults, tinyTerminalAlpha)
    {
        TrainSigmaTable = ScheduleMath.TrainSigmas(AlphasCumprodValues);
        LogSigmaTable = ScheduleMath.LogSigmas(TrainSigmaTable);
    }

    /// <summary>σ per training timestep (float32, ascending).</summary>
    protected float[] TrainSigmaTable { get; }

    /// <summary>ln σ per training timestep, float32 like NumPy's log of the table.</summary>
    protected float[] LogSigmaTable { get; }

    /// <summary>The inference sigmas as float32 values (including the final one).</summary>
    protected double[] SigmaValues { get; private set; } = [];

    /// <summary>Installs timesteps and sigmas (rounded to float32, as diffusers stores them).</summary>
    protected void SetSigmaSchedule(double[] timesteps, DType timestepDType, Device? device, double[] sigmas)
    {
        SigmaValues = sigmas.Select(s => (double)(float)s).ToArray();
        SetSchedule(timesteps, timestepDType, device, SigmaValues);
    }

    /// <summary>The Karras/exponential sigma shapes that replace the interpolated ones, with their timesteps.</summary>
    protected (double[] Sigmas, double[] Timesteps) ReshapeSigmas(double[] sigmas, int steps, bool configBounds)
    {
        var sigmaMin = configBounds && Config.SigmaMin is { } lo ? lo : sigmas[^1];
        var sigmaMax = configBounds && Config.SigmaMax is { } hi ? hi : sigmas[0];
        double[] reshaped;
        if (Config.UseKarrasSigmas == true) reshaped = ScheduleMath.KarrasSigmas(sigmaMin, sigmaMax, steps);
        else if (Config.UseExponentialSigmas == true) reshaped = ScheduleMath.ExponentialSigmas(sigmaMin, sigmaMax, steps);
        else if (Config.UseBetaSigmas == true) throw new NotSupportedException("use_beta_sigmas is not supported");
        else return (sigmas, []);
        return (reshaped, reshaped.Select(s => ScheduleMath.SigmaToT(s, LogSigmaTable)).ToArray());
    }

    protected void CheckSigmaShapes()
    {
        var n = (Config.UseKarrasSigmas == true ? 1 : 0) + (Config.UseExponentialSigmas == true ? 1 : 0) + (Config.UseBetaSigmas == true ? 1 : 0);
        if (n > 1) throw new ArgumentException("only one of use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas can be set");
    }

    /// <summary>The σ after the last step: 0, or the smallest training σ.</summary>
    protected double FinalSigma() => (Config.FinalSigmasType ?? "zero") switch
    {
        "zero" => 0,
        "sigma_min" => MathF.Sqrt((1f - AlphasCumprodValues[0]) / AlphasCumprodValues[0]),
        var other => throw new NotSupportedException($"final_sigmas_type '{other}' is not supported (zero, sigma_min)"),
    };

    /// <summary>
    /// k-diffusion's init noise: σmax for linspace/trailing spacing, √(σmax² + 1) for leading
    /// (in float32, as diffusers computes it from the tensor).
    /// </summary>
    protected double EulerInitNoiseSigma()
    {
        if (SigmaValues.Length == 0) throw NotReady();
        var max = (float)SigmaValues.Max();
        return Config.TimestepSpacing is "linspace" or "trailing" ? max : MathF.Sqrt(max * max + 1f);
    }

    /// <summary>
    /// x / √(σ² + 1): unit variance for the model. The divisor is computed in float32 as diffusers'
    /// 0-d tensor does (bit-identical inputs for float32 samples); float64 samples get it in float64.
    /// </summary>
    protected static Tensor ScaleBySigma(Tensor sample, double sigma)
    {
        if (sample.DType == DType.Float64) return sample / Math.Sqrt(sigma * sigma + 1);
        var s = (float)sigma;
        return sample / (double)MathF.Sqrt(s * s + 1f);
    }

    /// <summary>x₀ from the model output in the σ parameterisation.</summary>
    protected Tensor PredictOriginalSigma(Tensor modelOutput, Tensor sample, double sigma) => PredictionType switch
    {
        "epsilon" => sample - sigma * modelOutput,
        "v_prediction" => modelOutput * (-sigma / Math.Sqrt(sigma * sigma + 1)) + sample / (sigma * sigma + 1),
        "sample" => modelOutput.Alias(),
        _ => throw new NotSupportedException($"prediction_type '{PredictionType}' is not supported"),
    };

    /// <summary>The variance-preserving pair of a σ: α = 1/√(σ²+1) and σ_t = σ·α (DPM-Solver, UniPC).</summary>
    protected static (double Alpha, double Sigma) AlphaSigma(double sigma)
    {
        var alpha = 1 / Math.Sqrt(sigma * sigma + 1);
        return (alpha, sigma * alpha);
    }

    /// <summary>λ = ln α − ln σ_t, the half log-SNR the multistep solvers step in.</summary>
    protected static double Lambda(double sigma)
    {
        var (a, s) = AlphaSigma(sigma);
        return Math.Log(a) - Math.Log(s);
    }

    /// <summary>x₀ from the model output in the variance-preserving parameterisation (α_t, σ_t); v-prediction otherwise.</summary>
    protected Tensor PredictOriginalVariancePreserving(Tensor modelOutput, Tensor sample, double alphaT, double sigmaT) => PredictionType switch
    {
        "epsilon" => (sample - sigmaT * modelOutput) / alphaT,
        "sample" => modelOutput.Alias(),
        _ => alphaT * sample - sigmaT * modelOutput,
    };

    /// <summary>ε from the model output in the variance-preserving parameterisation (α_t, σ_t); v-prediction otherwise.</summary>
    protected Tensor PredictNoiseVariancePreserving(Tensor modelOutput, Tensor sample, double alphaT, double sigmaT) => PredictionType switch
    {
        "epsilon" => modelOutput.Alias(),
        "sample" => (sample - alphaT * modelOutput) / sigmaT,
        _ => alphaT * modelOutput + sigmaT * sample,
    };

    /// <summary>The schedule positions of the given timesteps, as diffusers' add_noise finds them.</summary>
    protected int[] StepIndicesFor(Tensor timesteps, bool lastWhenMissing)
    {
        using var d = timesteps.To(Device.Cpu, DType.Float64).Flatten();
        var values = d.ToArray<double>();
        if (BeginIndex is null)
        {
            // Compare as the schedule's dtype stores them.
            var floatSchedule = Timesteps.DType == DType.Float32;
            return values.Select(v => IndexForTimestep(floatSchedule ? (float)v : v, lastWhenMissing)).ToArray();
        }
        var fixedIndex = StepIndex ?? BeginIndex.Value;
        return values.Select(_ => fixedIndex).ToArray();
    }

    /// <summary>σ per batch item shaped [B, 1, 1, …] in <paramref name="like"/>'s dtype.</summary>
    protected Tensor SigmaColumn(int[] indices, Tensor like)
    {
        var s = indices.Select(i => (float)SigmaValues[i]).ToArray();
        var shape = new long[like.Dim];
        Array.Fill(shape, 1L);
        shape[0] = s.Length;
        using var t = torch.Tensor(s);
        using var r = t.Reshape(shape);
        return r.To(like.Device, like.DType);
    }

    /// <summary>α_t·x₀ + σ_t·ε with α = 1/√(σ²+1), σ_t = σ·α: the noising of the solvers that work on the VP sample (DPM-Solver, UniPC).</summary>
    protected Tensor AddNoiseVariancePreserving(Tensor originalSamples, Tensor noise, Tensor timesteps)
    {
        using var scope = torch.NewDisposeScope();
        var sigma = SigmaColumn(StepIndicesFor(timesteps, lastWhenMissing: true), originalSamples);
        var alpha = 1.0 / (sigma * sigma + 1).Pow(0.5);
        var sigmaT = sigma * alpha;
        return (alpha * originalSamples + sigmaT * noise).MoveToOuterScope();
    }

    /// <summary>img2img noising x₀ + σ(t)·ε (Euler, LMS, DPM++ SDE).</summary>
    public override Tensor AddNoise(Tensor originalSamples, Tensor noise, Tensor timesteps)
    {
        using var sigma = SigmaColumn(StepIndicesFor(timesteps, lastWhenMissing: false), originalSamples);
        using var scaled = noise * sigma;
        return originalSamples + scaled;
    }
}
