using SdAppliance.Torch;

namespace SdAppliance.Diffusion.Schedulers;

/// <summary>
/// Linear multistep (k-diffusion's <c>sample_lms</c>, order 4), diffusers'
/// <c>LMSDiscreteScheduler</c> and A1111's "LMS": x_{i+1} = x_i + Σ_j c_j·d_{i−j}, where d are the
/// ODE derivatives of the last steps and c_j integrates the Lagrange basis polynomial through
/// their sigmas over [σ_i, σ_{i+1}] (numerically, as diffusers does with scipy's quad).
/// </summary>
public sealed class LmsDiscreteScheduler : SigmaScheduler
{
    /// <summary>diffusers' constructor defaults.</summary>
    public static readonly SchedulerConfig Defaults = new()
    {
        NumTrainTimesteps = 1000, BetaStart = 0.0001, BetaEnd = 0.02, BetaSchedule = "linear",
        UseKarrasSigmas = false, UseExponentialSigmas = false, UseBetaSigmas = false,
        PredictionType = "epsilon", TimestepSpacing = "linspace", StepsOffset = 0,
    };

    private readonly List<Tensor> derivatives = [];

    public LmsDiscreteScheduler(SchedulerConfig? config = null) : base(config ?? new(), Defaults, tinyTerminalAlpha: false)
    {
        CheckPrediction("epsilon", "v_prediction", "sample");
        CheckSigmaShapes();
    }

    /// <summary>The multistep order (diffusers' <c>step(order=4)</c>).</summary>
    public int LmsOrder { get; set; } = 4;

    public override double InitNoiseSigma => EulerInitNoiseSigma();

    public override void SetTimesteps(int numInferenceSteps, Device? device = null)
    {
        if (numInferenceSteps < 1) throw new ArgumentOutOfRangeException(nameof(numInferenceSteps));
        NumInferenceSteps = numInferenceSteps;
        var ts = ScheduleMath.Spacing(Config.TimestepSpacing!, NumTrainTimesteps, numInferenceSteps, Config.StepsOffset ?? 0, roundLinspace: false);
        var sigmas = ts.Select(t => ScheduleMath.Interp(t, TrainSigmaTable)).ToArray();
        // LMS reshapes between the interpolated end points (diffusers ignores sigma_min/max here).
        var (reshaped, reshapedTs) = ReshapeSigmas(sigmas, numInferenceSteps, configBounds: false);
        if (reshapedTs.Length > 0) (sigmas, ts) = (reshaped, reshapedTs);
        ClearDerivatives();
        SetSigmaSchedule(ts, DType.Float32, device, [.. sigmas, 0.0]);
    }

    public override Tensor ScaleModelInput(Tensor sample, double timestep) =>
        ScaleBySigma(sample, SigmaValues[InitStepIndex(timestep)]);

    /// <summary>∫ over [σ_t, σ_{t+1}] of the Lagrange basis polynomial for node <paramref name="current"/> among σ_t, σ_{t−1}, ….</summary>
    public double LmsCoefficient(int order, int t, int current)
    {
        var s = SigmaValues;
        double Basis(double tau)
        {
            var prod = 1.0;
            for (var k = 0; k < order; k++)
            {
                if (k == current) continue;
                prod *= (tau - s[t - k]) / (s[t - current] - s[t - k]);
            }
            return prod;
        }
        return Quadrature.GaussLegendre(Basis, s[t], s[t + 1]);
    }

    public override SchedulerOutput Step(Tensor modelOutput, double timestep, Tensor sample, NoiseSource? noise = null)
    {
        if (NumInferenceSteps is null) throw NotReady();
        var index = InitStepIndex(timestep);
        var sigma = SigmaValues[index];

        using var scope = torch.NewDisposeScope();
        var mo = Upcast(modelOutput);
        var x = Upcast(sample);
        var x0 = PredictOriginalSigma(mo, x, sigma);
        derivatives.Add(((x - x0) / sigma).DetachFromDisposeScope());
        if (derivatives.Count > LmsOrder)
        {
            derivatives[0].Dispose();
            derivatives.RemoveAt(0);
        }
        var order = Math.Min(index + 1, LmsOrder);
        // Σ first, then added to x, in diffusers' order of rounding.
        var sum = LmsCoefficient(order, index, 0) * derivatives[^1];
        for (var j = 1; j < order; j++)
            sum = sum + LmsCoefficient(order, index, j) * derivatives[derivatives.Count - 1 - j];
        var prev = x + sum;
        StepIndex = index + 1;
        return new SchedulerOutput(CastLike(prev, modelOutput).MoveToOuterScope(), CastLike(x0, modelOutput).MoveToOuterScope());
    }

    private void ClearDerivatives()
    {
        foreach (var d in derivatives) d.Dispose();
        derivatives.Clear();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) ClearDerivatives();
        base.Dispose(disposing);
    }
}
