namespace SdAppliance.Torch.Optim;

/// <summary>
/// Hyperparameters of <see cref="Prodigy"/> (prodigyopt's defaults), and the step-size estimate it carries from step to
/// step in every group as prodigyopt keeps it in its param_groups (d, d_max, d_numerator, k), so that a saved state
/// resumes the estimate exactly.
/// </summary>
public sealed record ProdigyOptions : OptimizerOptions
{
    /// <summary>A multiplier of the estimated step size, not a step size: 1 unless the run is unstable.</summary>
    public ProdigyOptions() => Lr = 1.0;

    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.999;

    /// <summary>The decay of the estimate's running sums; null is √beta2.</summary>
    public double? Beta3 { get; init; }

    public double Eps { get; init; } = 1e-8;
    public double WeightDecay { get; init; }

    /// <summary>AdamW's decoupled decay (true) or an L2 term added to the gradient (false).</summary>
    public bool Decouple { get; init; } = true;

    public bool UseBiasCorrection { get; init; }

    /// <summary>Leaves the learning rate out of the estimate's denominator, so that a warmup does not inflate the estimate.</summary>
    public bool SafeguardWarmup { get; init; }

    /// <summary>The first estimate of the distance to the solution.</summary>
    public double D0 { get; init; } = 1e-6;

    /// <summary>Scales the estimate: the way to ask for a larger (2, 10) or smaller (0.5, 0.1) learning rate.</summary>
    public double DCoef { get; init; } = 1.0;

    /// <summary>The most the estimate may grow per step (infinity: unbounded; 1.02 gives a warmup).</summary>
    public double GrowthRate { get; init; } = double.PositiveInfinity;

    /// <summary>The current estimate d (null before the first step: <see cref="D0"/>).</summary>
    public double? D { get; init; }

    /// <summary>The largest estimate so far (null before the first step: <see cref="D0"/>).</summary>
    public double? DMax { get; init; }

    public double DNumerator { get; init; }

    /// <summary>Steps taken (what the bias correction counts).</summary>
    public long K { get; init; }

    internal override void Validate()
    {
        base.Validate();
        Require(Beta1 >= 0 && Beta1 < 1, $"invalid beta1 {Beta1}: it must be in [0, 1)");
        Require(Beta2 >= 0 && Beta2 < 1, $"invalid beta2 {Beta2}: it must be in [0, 1)");
        Require(Beta3 is null || (Beta3 >= 0 && Beta3 < 1), $"invalid beta3 {Beta3}: it must be in [0, 1), or unset for sqrt(beta2)");
        Require(Eps > 0, $"invalid eps {Eps}: it must be > 0");
        Require(WeightDecay >= 0, $"invalid weight_decay value {WeightDecay}: it must be >= 0");
        Require(D0 > 0, $"invalid d0 {D0}: it must be > 0");
        Require(DCoef > 0, $"invalid d_coef {DCoef}: it must be > 0");
        Require(GrowthRate >= 1, $"invalid growth_rate {GrowthRate}: it must be >= 1 (infinity for no limit)");
    }
}

/// <summary>
/// Prodigy (Mishchenko and Defazio 2023, as prodigyopt): Adam whose step size d·lr is estimated from how far the
/// parameters moved along their gradients, so that lr stays 1. Every step first sweeps all parameters to update the
/// estimate, then updates them with the step size from before the sweep, as the reference does.
/// </summary>
public sealed class Prodigy : Optimizer<ProdigyOptions>
{
    // What the sweep hands to the updates of this step.
    private double stepSize;
    private double estimate;

    public Prodigy(IEnumerable<Tensor> parameters, ProdigyOptions? options = null) : base(parameters, options ?? new()) => CommonLearningRate();

    public Prodigy(IEnumerable<ParamGroup<ProdigyOptions>> groups, ProdigyOptions? defaults = null) : base(groups, defaults ?? new()) => CommonLearningRate();

    /// <summary>d·lr, the step size before the bias correction (what kohya logs as d*lr): the scheduled lr is only its multiplier.</summary>
    public override double ReportedLearningRate => (ParamGroups[0].Options.D ?? ParamGroups[0].Options.D0) * ParamGroups[0].Lr;

    /// <summary>The one learning rate of every group (a group may hold 0 to stay frozen), as the reference requires.</summary>
    private double CommonLearningRate()
    {
        var lr = ParamGroups.Max(g => g.Lr);
        for (var g = 0; g < ParamGroups.Count; g++)
            if (ParamGroups[g].Lr != lr && ParamGroups[g].Lr != 0)
                throw new ArgumentException($"Prodigy: parameter group {g} has learning rate {ParamGroups[g].Lr} while another has {lr}; "
                    + "Prodigy estimates one step size for all groups, so give every group the same learning rate (1 as a rule), or 0 to freeze it");
        return lr;
    }

    private protected override IEnumerable<StateSpec> StateLayout(ProdigyOptions o, Tensor param) =>
        [new("exp_avg", param.Shape, param.DType), new("exp_avg_sq", param.Shape, param.DType),
         new("s", [param.NumEl], param.DType), new("p0", [param.NumEl], param.DType)];

    private protected override bool Prepare(IReadOnlyList<(ParamGroup Group, IReadOnlyList<ParamSlot> Batch)> batches)
    {
        var lr = CommonLearningRate();
        // The reference reads the estimate and the betas from the first group.
        var first = ParamGroups[0].Options;
        var beta3 = first.Beta3 ?? Math.Sqrt(first.Beta2);
        var d = first.D ?? first.D0;
        var dMax = first.DMax ?? first.D0;
        var biasCorrection = first.UseBiasCorrection
            ? Math.Sqrt(1 - Math.Pow(first.Beta2, first.K + 1)) / (1 - Math.Pow(first.Beta1, first.K + 1))
            : 1;
        var dlr = d * lr * biasCorrection;
        var numerator = first.DNumerator * beta3;
        var denominator = 0.0;

        foreach (var (group, batch) in batches)
        {
            var o = ((ParamGroup<ProdigyOptions>)group).Options;
            using var scope = torch.NewDisposeScope();
            var parameters = new Tensor[batch.Count];
            var grads = new Tensor[batch.Count];
            var expAvgs = new Tensor[batch.Count];
            var expAvgSqs = new Tensor[batch.Count];
            var sums = new Tensor[batch.Count];
            for (var i = 0; i < batch.Count; i++)
            {
                var (param, grad, state) = batch[i];
                if (!state.Tensors.ContainsKey("p0")) state.Set("p0", param.Flatten().Clone());
                state.EnsureZeros(StateLayout(o, param), param.Device);
                parameters[i] = param;
                grads[i] = grad;
                expAvgs[i] = state["exp_avg"];
                expAvgSqs[i] = state["exp_avg_sq"];
                sums[i] = state["s"];
            }
            if (o.Lr == 0) continue;
            if (o.WeightDecay != 0 && !o.Decouple) grads = Foreach.Add(grads, parameters, o.WeightDecay);

            var flatGrads = grads.Select(g => g.Flatten()).ToArray();
            var dots = new Tensor[batch.Count];
            for (var i = 0; i < batch.Count; i++)
                dots[i] = OptimMath.Dot(flatGrads[i], batch[i].State["p0"].Sub(parameters[i].Flatten()));
            // The reference adds each parameter's float32 dot product to a float64 sum, in parameter order.
            foreach (var dot in OptimMath.Stack(dots).ToArray<float>()) numerator += d / o.D0 * dlr * dot;

            Foreach.Mul_(expAvgs, first.Beta1);
            Foreach.Add_(expAvgs, grads, d * (1 - first.Beta1));
            Foreach.Mul_(expAvgSqs, first.Beta2);
            Foreach.Addcmul_(expAvgSqs, grads, grads, d * d * (1 - first.Beta2));
            Foreach.Mul_(sums, beta3);
            Foreach.Add_(sums, flatGrads, o.SafeguardWarmup ? d / o.D0 * d : d / o.D0 * dlr);
            foreach (var sum in OptimMath.Stack(sums.Select(s => s.Abs().Sum()).ToArray()).ToArray<float>()) denominator += sum;
        }

        // No gradient (or only zeros) gives no estimate: the reference leaves the parameters and the estimate as they are.
        if (denominator == 0) return false;
        if (lr > 0)
        {
            var dHat = first.DCoef * numerator / denominator;
            if (d == first.D0) d = Math.Max(d, dHat);
            dMax = Math.Max(dMax, dHat);
            d = Math.Min(dMax, d * first.GrowthRate);
        }
        foreach (var group in ParamGroups)
            group.Options = group.Options with { DNumerator = numerator, D = d, DMax = dMax, K = group.Options.K + 1 };
        stepSize = dlr;
        estimate = d;
        return true;
    }

    private protected override void UpdateBatch(ProdigyOptions o, IReadOnlyList<ParamSlot> batch)
    {
        var parameters = batch.Select(s => s.Param).ToArray();
        var expAvgs = batch.Select(s => s.State["exp_avg"]).ToArray();
        var denominators = Foreach.Sqrt(batch.Select(s => s.State["exp_avg_sq"]).ToArray());
        // The step size is the one from before the sweep, the epsilon scales with the new estimate: the reference's order.
        Foreach.Add_(denominators, estimate * o.Eps);
        if (o.WeightDecay != 0 && o.Decouple) Foreach.Add_(parameters, parameters, -o.WeightDecay * stepSize);
        Foreach.Addcdiv_(parameters, expAvgs, denominators, -stepSize);
    }
}
