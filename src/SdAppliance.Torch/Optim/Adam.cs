namespace SdAppliance.Torch.Optim;

/// <summary>Hyperparameters of <see cref="Adam"/> (torch.optim.Adam defaults).</summary>
public sealed record AdamOptions : OptimizerOptions
{
    public AdamOptions() => Lr = 1e-3;

    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.999;
    public double Eps { get; init; } = 1e-8;

    /// <summary>L2 penalty: added to the gradient (coupled, unlike AdamW).</summary>
    public double WeightDecay { get; init; }

    public bool Amsgrad { get; init; }
    public bool Maximize { get; init; }

    internal override void Validate()
    {
        base.Validate();
        AdamMath.Validate(Beta1, Beta2, Eps, WeightDecay);
    }
}

/// <summary>Hyperparameters of <see cref="AdamW"/> (torch.optim.AdamW defaults).</summary>
public sealed record AdamWOptions : OptimizerOptions
{
    public AdamWOptions() => Lr = 1e-3;

    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.999;
    public double Eps { get; init; } = 1e-8;

    /// <summary>Decoupled decay: the parameter shrinks by lr·weight_decay each step.</summary>
    public double WeightDecay { get; init; } = 1e-2;

    public bool Amsgrad { get; init; }
    public bool Maximize { get; init; }

    internal override void Validate()
    {
        base.Validate();
        AdamMath.Validate(Beta1, Beta2, Eps, WeightDecay);
    }
}

/// <summary>torch.optim.Adam (single-tensor update, the same operations in the same order).</summary>
public sealed class Adam : Optimizer<AdamOptions>
{
    public Adam(IEnumerable<Tensor> parameters, AdamOptions? options = null) : base(parameters, options ?? new()) { }

    public Adam(IEnumerable<ParamGroup<AdamOptions>> groups, AdamOptions? defaults = null) : base(groups, defaults ?? new()) { }

    private protected override IEnumerable<StateSpec> StateLayout(AdamOptions o, Tensor param) => AdamMath.Layout(param, o.Amsgrad);

    private protected override void Update(AdamOptions o, Tensor param, Tensor grad, ParamState state) =>
        AdamMath.Update(param, grad, state, o.Lr, o.Beta1, o.Beta2, o.Eps, o.WeightDecay, decoupled: false, o.Amsgrad, o.Maximize);
}

/// <summary>torch.optim.AdamW: Adam with decoupled weight decay.</summary>
public sealed class AdamW : Optimizer<AdamWOptions>
{
    public AdamW(IEnumerable<Tensor> parameters, AdamWOptions? options = null) : base(parameters, options ?? new()) { }

    public AdamW(IEnumerable<ParamGroup<AdamWOptions>> groups, AdamWOptions? defaults = null) : base(groups, defaults ?? new()) { }

    private protected override IEnumerable<StateSpec> StateLayout(AdamWOptions o, Tensor param) => AdamMath.Layout(param, o.Amsgrad);

    private protected override void Update(AdamWOptions o, Tensor param, Tensor grad, ParamState state) =>
        AdamMath.Update(param, grad, state, o.Lr, o.Beta1, o.Beta2, o.Eps, o.WeightDecay, decoupled: true, o.Amsgrad, o.Maximize);
}

internal static class AdamMath
{
    public static void Validate(double beta1, double beta2, double eps, double weightDecay)
    {
        if (!(eps >= 0)) throw new ArgumentException($"invalid epsilon value {eps}: it must be >= 0");
        if (!(beta1 >= 0 && beta1 < 1)) throw new ArgumentException($"invalid beta1 {beta1}: it must be in [0, 1)");
        if (!(beta2 >= 0 && beta2 < 1)) throw new ArgumentException($"invalid beta2 {beta2}: it must be in [0, 1)");
        if (!(weightDecay >= 0)) throw new ArgumentException($"invalid weight_decay value {weightDecay}: it must be >= 0");
    }

    public static IEnumerable<StateSpec> Layout(Tensor param, bool amsgrad)
    {
        var shape = param.Shape;
        yield return new("exp_avg", shape, param.DType);
        yield return new("exp_avg_sq", shape, param.DType);
        if (amsgrad) yield return new("max_exp_avg_sq", shape, param.DType);
    }

    public static void Update(Tensor param, Tensor grad, ParamState state, double lr, double beta1, double beta2, double eps,
        double weightDecay, bool decoupled, bool amsgrad, bool maximize)
    {
        state.EnsureZeros(Layout(param, amsgrad), param.Device);
        var g = maximize ? grad.Neg() : grad;
        if (weightDecay != 0)
        {
            if (decoupled) param.Mul_(1 - lr * weightDecay);
            else g = g.Add(param, weightDecay);
        }

        var expAvg = state["exp_avg"];
        var expAvgSq = state["exp_avg_sq"];
        expAvg.Lerp_(g, 1 - beta1);
        expAvgSq.Mul_(beta2).Addcmul_(g, g, 1 - beta2);

        double step = state.Step;
        var biasCorrection1 = 1 - Math.Pow(beta1, step);
        var biasCorrection2 = 1 - Math.Pow(beta2, step);
        var stepSize = lr / biasCorrection1;
        var biasCorrection2Sqrt = Math.Sqrt(biasCorrection2);

        var second = expAvgSq;
        if (amsgrad) second = state["max_exp_avg_sq"].Maximum_(expAvgSq);
        var denom = OptimMath.Sqrt(second).Div_(biasCorrection2Sqrt).Add_(eps);
        param.Addcdiv_(expAvg, denom, -stepSize);
    }
}
