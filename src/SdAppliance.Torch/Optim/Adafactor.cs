namespace SdAppliance.Torch.Optim;

/// <summary>
/// Hyperparameters of <see cref="Adafactor"/> (transformers.optimization.Adafactor defaults).
/// transformers' <c>lr=None</c> is <see cref="OptimizerOptions.Lr"/> = 0 here: with
/// <see cref="RelativeStep"/> the step size is computed from the step count and Lr must stay 0.
/// </summary>
public sealed record AdafactorOptions : OptimizerOptions
{
    /// <summary>Regularizes the squared gradient (transformers' eps[0]).</summary>
    public double Eps1 { get; init; } = 1e-30;

    /// <summary>Lower bound of the parameter scale (transformers' eps[1]).</summary>
    public double Eps2 { get; init; } = 1e-3;

    /// <summary>Updates are scaled down so their RMS is at most this.</summary>
    public double ClipThreshold { get; init; } = 1.0;

    /// <summary>The second-moment decay is 1 − step^decay_rate.</summary>
    public double DecayRate { get; init; } = -0.8;

    /// <summary>First-moment coefficient; null keeps no first moment (the memory-saving default).</summary>
    public double? Beta1 { get; init; }

    public double WeightDecay { get; init; }

    /// <summary>Multiplies the step size by the parameter's RMS (at least <see cref="Eps2"/>).</summary>
    public bool ScaleParameter { get; init; } = true;

    /// <summary>Step size min(0.01, 1/√step) (or min(1e-6·step, 1/√step) with <see cref="WarmupInit"/>) instead of Lr.</summary>
    public bool RelativeStep { get; init; } = true;

    public bool WarmupInit { get; init; }

    internal override void Validate()
    {
        base.Validate();
        Require(!(RelativeStep && Lr != 0), "cannot combine a manual lr with relative_step = true (leave Lr at 0, or turn RelativeStep off)");
        Require(!WarmupInit || RelativeStep, "warmup_init = true requires relative_step = true");
        Require(ClipThreshold > 0, $"invalid clip_threshold {ClipThreshold}: it must be > 0");
        Require(Beta1 is null || (Beta1 >= 0 && Beta1 < 1), $"invalid beta1 {Beta1}: it must be in [0, 1) or null");
        Require(WeightDecay >= 0, $"invalid weight_decay value {WeightDecay}: it must be >= 0");
    }
}

/// <summary>
/// Adafactor (Shazeer and Stern 2018, as transformers/fairseq implement it): for parameters of
/// two or more dimensions the second moment is kept factored as row and column means, so its
/// memory is O(rows + columns). Half-precision parameters are updated in float32 and written back.
/// </summary>
public sealed class Adafactor : Optimizer<AdafactorOptions>
{
    public Adafactor(IEnumerable<Tensor> parameters, AdafactorOptions? options = null) : base(parameters, options ?? new()) { }

    public Adafactor(IEnumerable<ParamGroup<AdafactorOptions>> groups, AdafactorOptions? defaults = null) : base(groups, defaults ?? new()) { }

    private static bool IsHalf(DType t) => t is DType.Float16 or DType.BFloat16;

    private protected override IEnumerable<StateSpec> StateLayout(AdafactorOptions o, Tensor param)
    {
        // State follows the gradient, which is promoted to float32 for half-precision parameters.
        var dtype = IsHalf(param.DType) ? DType.Float32 : param.DType;
        var shape = param.Shape;
        if (o.Beta1 is not null) yield return new("exp_avg", shape, dtype);
        if (shape.Length >= 2)
        {
            yield return new("exp_avg_sq_row", shape[..^1], dtype);
            yield return new("exp_avg_sq_col", [.. shape[..^2], shape[^1]], dtype);
        }
        else
        {
            yield return new("exp_avg_sq", shape, dtype);
        }
    }

    /// <summary>The step size transformers' <c>_get_lr</c> gives for this step and parameter RMS.</summary>
    internal static double StepSize(AdafactorOptions o, long step, double rms)
    {
        var relative = o.Lr;
        if (o.RelativeStep)
        {
            var minStep = o.WarmupInit ? 1e-6 * step : 1e-2;
            relative = Math.Min(minStep, 1.0 / Math.Sqrt(step));
        }
        var scale = o.ScaleParameter ? Math.Max(o.Eps2, rms) : 1.0;
        return scale * relative;
    }

    private static Tensor Rms(Tensor x) => OptimMath.VectorNorm(x, 2).Div_(Math.Sqrt(x.NumEl));

    // Each parameter has its own step size (from its RMS) and factored state: one at a time, each in its own scope.
    private protected override void UpdateBatch(AdafactorOptions o, IReadOnlyList<ParamSlot> batch)
    {
        foreach (var (param, grad, state) in batch)
        {
            using var scope = torch.NewDisposeScope();
            Update(o, param, grad, state);
        }
    }

    private void Update(AdafactorOptions o, Tensor param, Tensor grad, ParamState state)
    {
        var g = IsHalf(grad.DType) ? grad.Float() : grad;
        state.EnsureZeros(StateLayout(o, param), param.Device);
        var p = IsHalf(param.DType) ? param.Float() : param;

        // Reading the RMS back is a device sync, as in transformers; skip it when it is unused.
        var rms = 0.0;
        if (o.ScaleParameter)
        {
            using var r = Rms(p);
            rms = r.Item();
        }
        var lr = StepSize(o, state.Step, rms);
        var beta2t = 1.0 - Math.Pow(state.Step, o.DecayRate);

        var update = OptimMath.Pow(g, 2).Add_(o.Eps1);
        if (p.Dim >= 2)
        {
            var row = state["exp_avg_sq_row"];
            var col = state["exp_avg_sq_col"];
            row.Mul_(beta2t).Add_(OptimMath.Mean(update, -1), 1.0 - beta2t);
            col.Mul_(beta2t).Add_(OptimMath.Mean(update, -2), 1.0 - beta2t);
            // v ≈ row · col / mean(row): the rank-1 reconstruction of the second moment.
            var rowFactor = OptimMath.Unsqueeze(row.Div(OptimMath.Mean(row, -1, keepDim: true)).Rsqrt_(), -1);
            var colFactor = OptimMath.Rsqrt(OptimMath.Unsqueeze(col, -2));
            update = rowFactor.Mul(colFactor).Mul_(g);
        }
        else
        {
            var v = state["exp_avg_sq"];
            v.Mul_(beta2t).Add_(update, 1.0 - beta2t);
            update = OptimMath.Rsqrt(v).Mul_(g);
        }

        update.Div_(Rms(update).Div_(o.ClipThreshold).ClampMin_(1.0));
        update.Mul_(lr);
        if (o.Beta1 is { } beta1)
            update = state["exp_avg"].Mul_(beta1).Add_(update, 1 - beta1);

        if (o.WeightDecay != 0) p.Add_(p, -o.WeightDecay * lr);
        p.Sub_(update);
        if (!ReferenceEquals(p, param)) param.Copy_(p);
    }
}
