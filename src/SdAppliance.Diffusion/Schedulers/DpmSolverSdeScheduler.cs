using SdAppliance.Torch;

namespace SdAppliance.Diffusion.Schedulers;

/// <summary>
/// DPM-Solver++ SDE (k-diffusion's <c>sample_dpmpp_sde</c>, η = 1, r = ½), diffusers'
/// <c>DPMSolverSDEScheduler</c>; with <c>use_karras_sigmas</c> it is A1111's "DPM++ SDE Karras".
/// Each interval takes two model evaluations: an ancestral step to the log-sigma midpoint, then
/// one from the start over the whole interval using the midpoint's x₀. The schedule interleaves
/// the midpoint timesteps (<see cref="Order"/> = 2), so it has 2n − 1 entries for n steps.
/// <para>
/// The noise. diffusers, k-diffusion and A1111 draw it from a Brownian tree (torchsde's
/// <c>BrownianInterval</c>, seeded apart from the pipeline's generator), whose numbers no engine
/// reproduces without reimplementing torchsde's tree and its use of the PRNG; the shared fixtures
/// have no golden for this sampler. What matters for the method is the law of the increments:
/// the first stage's noise is the Brownian increment over [σ_mid, σ], the second's over
/// [σ_next, σ] — the same path, so the two are correlated with ρ = √((σ − σ_mid)/(σ − σ_next)).
/// With <c>noise_sampler brownian</c> (the default) we draw exactly that law from the generator:
/// z₁ for the first piece, z₂ for the remainder, and the second stage uses
/// (√L₁·z₁ + √L₂·z₂)/√(L₁ + L₂). <c>noise_sampler independent</c> is k-diffusion's
/// <c>default_noise_sampler</c> (a fresh randn per stage), which drops that correlation; it is
/// the mode our own reference trace checks (diffusers' scheduler with its tree replaced by
/// per-stage draws, tests/fixtures/schedulers_extra_golden.safetensors). Both take two draws per
/// interval from the generator (or from <c>noise_sampler_seed</c> when no generator is given).
/// </para>
/// </summary>
public sealed class DpmSolverSdeScheduler : SigmaScheduler
{
    /// <summary>diffusers' constructor defaults (plus ours, <c>noise_sampler</c>).</summary>
    public static readonly SchedulerConfig Defaults = new()
    {
        NumTrainTimesteps = 1000, BetaStart = 0.00085, BetaEnd = 0.012, BetaSchedule = "linear",
        PredictionType = "epsilon", UseKarrasSigmas = false, UseExponentialSigmas = false, UseBetaSigmas = false,
        TimestepSpacing = "linspace", StepsOffset = 0, NoiseSampler = "brownian",
    };

    private readonly bool brownian;
    private Tensor? firstStageSample;
    private Tensor? firstStageNoise;
    private double midPointSigma;
    private Generator? seededGenerator;

    public DpmSolverSdeScheduler(SchedulerConfig? config = null) : base(config ?? new(), Defaults, tinyTerminalAlpha: false)
    {
        CheckPrediction("epsilon", "v_prediction");
        CheckSigmaShapes();
        brownian = Config.NoiseSampler switch
        {
            "brownian" => true,
            "independent" => false,
            var other => throw new NotSupportedException($"noise_sampler '{other}' is not supported (brownian, independent)"),
        };
    }

    public override int Order => 2;

    public override double InitNoiseSigma => EulerInitNoiseSigma();

    private bool InFirstStage => firstStageSample is null;

    public override void SetTimesteps(int numInferenceSteps, Device? device = null)
    {
        if (numInferenceSteps < 1) throw new ArgumentOutOfRangeException(nameof(numInferenceSteps));
        NumInferenceSteps = numInferenceSteps;
        // This class keeps its timesteps in float64 (linspace is not rounded to float32 here).
        var ts = ScheduleMath.Spacing(Config.TimestepSpacing!, NumTrainTimesteps, numInferenceSteps, Config.StepsOffset ?? 0, roundLinspace: false, float32: false);
        var sigmas = ts.Select(t => ScheduleMath.Interp(t, TrainSigmaTable)).ToArray();
        // Karras between the interpolated ends (diffusers' DPMSolverSDE ignores sigma_min/max).
        var (reshaped, reshapedTs) = ReshapeSigmas(sigmas, numInferenceSteps, configBounds: false);
        if (reshapedTs.Length > 0) (sigmas, ts) = (reshaped, reshapedTs);

        // Midpoints in t = −ln σ, mapped to fractional training timesteps.
        var mids = new double[sigmas.Length - 1];
        for (var i = 0; i < mids.Length; i++)
        {
            var t0 = -Math.Log(sigmas[i]);
            var t1 = -Math.Log(sigmas[i + 1]);
            mids[i] = ScheduleMath.SigmaToT(Math.Exp(-(t0 + (t1 - t0) * 0.5)), LogSigmaTable);
        }
        double[] full = [.. sigmas, 0.0];
        var interleavedSigmas = new List<double> { full[0] };
        for (var i = 1; i < full.Length - 1; i++) { interleavedSigmas.Add(full[i]); interleavedSigmas.Add(full[i]); }
        interleavedSigmas.Add(full[^1]);
        var interleavedTs = new List<double> { ts[0] };
        for (var i = 1; i < ts.Length; i++) { interleavedTs.Add(mids[i - 1]); interleavedTs.Add(ts[i]); }

        ResetState();
        SetSigmaSchedule([.. interleavedTs], DType.Float64, device, [.. interleavedSigmas]);
    }

    public override Tensor ScaleModelInput(Tensor sample, double timestep)
    {
        var index = InitStepIndex(timestep);
        return ScaleBySigma(sample, InFirstStage ? SigmaValues[index] : midPointSigma);
    }

    public override SchedulerOutput Step(Tensor modelOutput, double timestep, Tensor sample, NoiseSource? noise = null)
    {
        if (NumInferenceSteps is null) throw NotReady();
        var index = InitStepIndex(timestep);
        var first = InFirstStage;
        var sigma = first ? SigmaValues[index] : SigmaValues[index - 1];
        var sigmaNext = first ? SigmaValues[index + 1] : SigmaValues[index];

        using var scope = torch.NewDisposeScope();
        var mo = Upcast(modelOutput);
        var x = Upcast(sample);
        var t = -Math.Log(sigma);
        var tNext = -Math.Log(sigmaNext);
        var tProposed = t + (tNext - t) * 0.5;
        var sigmaInput = first ? sigma : Math.Exp(-tProposed);
        var x0 = PredictOriginalSigma(mo, x, sigmaInput);

        Tensor prev;
        if (sigmaNext == 0)
        {
            // The last interval ends at σ = 0: a plain Euler step.
            prev = x + (x - x0) / sigma * (sigmaNext - sigma);
        }
        else
        {
            if (first) tNext = tProposed;
            else x = firstStageSample!;
            var sigmaFrom = Math.Exp(-t);
            var sigmaTo = Math.Exp(-tNext);
            var sigmaUp = Math.Min(sigmaTo, Math.Sqrt(sigmaTo * sigmaTo * (sigmaFrom * sigmaFrom - sigmaTo * sigmaTo) / (sigmaFrom * sigmaFrom)));
            var sigmaDown = Math.Sqrt(sigmaTo * sigmaTo - sigmaUp * sigmaUp);
            var ancestralT = -Math.Log(sigmaDown);
            prev = Math.Exp(-ancestralT) / Math.Exp(-t) * x - ScheduleMath.ExpM1(t - ancestralT) * x0;
            var z = StageNoise(first, sigmaFrom, sigmaTo, mo, modelOutput.Device, noise);
            prev = prev + z * sigmaUp;
            if (first)
            {
                firstStageSample = x.Alias().DetachFromDisposeScope();
                midPointSigma = sigmaTo;
            }
            else
            {
                firstStageSample!.Dispose();
                firstStageSample = null;
            }
        }
        StepIndex = index + 1;
        return new SchedulerOutput(CastLike(prev, modelOutput).MoveToOuterScope(), CastLike(x0, modelOutput).MoveToOuterScope());
    }

    /// <summary>The normalised Brownian increment for this stage (see the class remarks).</summary>
    private Tensor StageNoise(bool first, double sigmaFrom, double sigmaTo, Tensor like, Device device, NoiseSource? noise)
    {
        var source = noise ?? SeededSource() ?? NoiseSource.Default;
        var z = source.Randn(like.Shape, like.DType, device);
        if (!brownian) return z;
        if (first)
        {
            firstStageNoise?.Dispose();
            firstStageNoise = z.Alias().DetachFromDisposeScope();
            return z;
        }
        // Second stage over [σ_next, σ]: the first piece [σ_mid, σ] is the first stage's increment.
        var l1 = Math.Abs(sigmaFrom - midPointSigma);
        var l2 = Math.Abs(midPointSigma - sigmaTo);
        var combined = (Math.Sqrt(l1) * firstStageNoise! + Math.Sqrt(l2) * z) / Math.Sqrt(l1 + l2);
        firstStageNoise!.Dispose();
        firstStageNoise = null;
        return combined;
    }

    private NoiseSource? SeededSource()
    {
        if (Config.NoiseSamplerSeed is not { } seed) return null;
        seededGenerator ??= new Generator(unchecked((ulong)seed));
        return seededGenerator;
    }

    private void ResetState()
    {
        firstStageSample?.Dispose();
        firstStageSample = null;
        firstStageNoise?.Dispose();
        firstStageNoise = null;
        midPointSigma = 0;
        seededGenerator?.Dispose();
        seededGenerator = null;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) ResetState();
        base.Dispose(disposing);
    }
}
