namespace SdAppliance.Torch.Optim;

/// <summary>Hyperparameters of <see cref="AdamW8bit"/> (bitsandbytes.optim.AdamW8bit defaults).</summary>
public sealed record AdamW8bitOptions : OptimizerOptions
{
    public AdamW8bitOptions() => Lr = 1e-3;

    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.999;
    public double Eps { get; init; } = 1e-8;

    /// <summary>Decoupled decay: the parameter shrinks by lr·weight_decay each step.</summary>
    public double WeightDecay { get; init; } = 1e-2;

    /// <summary>Parameters with fewer values keep float32 moments (bitsandbytes' min_8bit_size).</summary>
    public long MinEightBitSize { get; init; } = 4096;

    internal override void Validate()
    {
        base.Validate();
        AdamMath.Validate(Beta1, Beta2, Eps, WeightDecay);
        Require(MinEightBitSize >= 0, $"invalid min_8bit_size {MinEightBitSize}: it must be >= 0");
    }
}

/// <summary>
/// AdamW with 8-bit moments, as bitsandbytes' block-wise AdamW8bit: each step dequantises both moments, updates them
/// and the parameter in float32 (p += −lr·√(1−β2ᵗ)/(1−β1ᵗ) · m / (√v + eps·√(1−β2ᵗ)), then p ·= 1 − lr·weight_decay),
/// and quantises them again; a quarter of AdamW's state memory.
/// </summary>
public sealed class AdamW8bit : Optimizer<AdamW8bitOptions>
{
    public AdamW8bit(IEnumerable<Tensor> parameters, AdamW8bitOptions? options = null) : base(parameters, options ?? new()) { }

    public AdamW8bit(IEnumerable<ParamGroup<AdamW8bitOptions>> groups, AdamW8bitOptions? defaults = null) : base(groups, defaults ?? new()) { }

    /// <summary>CPU parameters step in the shim's fused kernel (false: the same step composed of operators, as on CUDA).</summary>
    internal bool UseCpuKernel { get; init; } = true;

    private protected override IEnumerable<StateSpec> StateLayout(AdamW8bitOptions o, Tensor param) => EightBitState.Layout(param, o.MinEightBitSize, states: 2);

    private protected override void UpdateBatch(AdamW8bitOptions o, IReadOnlyList<ParamSlot> batch)
    {
        double step = batch[0].State.Step;
        var correction1 = 1 - Math.Pow(o.Beta1, step);
        var correction2 = Math.Sqrt(1 - Math.Pow(o.Beta2, step));
        var stepSize = -o.Lr * correction2 / correction1;
        var plain = EightBitState.StepEachQuantised(batch, param => StateLayout(o, param), slot =>
        {
            var (param, grad, state) = slot;
            if (UseCpuKernel && EightBitState.FitsTheCpuKernel(param, grad, state))
            {
                EightBitState.StepOnCpu(adam: true, param, grad, state, o.Beta1, o.Beta2, o.Eps, o.Lr, o.WeightDecay, stepSize, correction2);
                return;
            }
            var m = EightBitState.Read(state, 1, signed: true);
            var v = EightBitState.Read(state, 2, signed: false);
            m.Mul_(o.Beta1).Add_(grad, 1 - o.Beta1);
            v.Mul_(o.Beta2).Addcmul_(grad, grad, 1 - o.Beta2);
            param.Addcdiv_(m, v.Sqrt().Add_(o.Eps * correction2), stepSize);
            if (o.WeightDecay > 0) param.Mul_(1 - o.Lr * o.WeightDecay);
            EightBitState.Write(state, 1, m, signed: true);
            EightBitState.Write(state, 2, v, signed: false);
        });
        if (plain.Count == 0) return;

        // The small parameters' float32 moments: the same formulas, one list operator per term for all of them.
        var parameters = plain.Select(s => s.Param).ToArray();
        var grads = plain.Select(s => s.Grad).ToArray();
        var expAvgs = plain.Select(s => s.State["state1"]).ToArray();
        var expAvgSqs = plain.Select(s => s.State["state2"]).ToArray();
        Foreach.Mul_(expAvgs, o.Beta1);
        Foreach.Add_(expAvgs, grads, 1 - o.Beta1);
        Foreach.Mul_(expAvgSqs, o.Beta2);
        Foreach.Addcmul_(expAvgSqs, grads, grads, 1 - o.Beta2);
        var denoms = Foreach.Sqrt(expAvgSqs);
        Foreach.Add_(denoms, o.Eps * correction2);
        Foreach.Addcdiv_(parameters, expAvgs, denoms, stepSize);
        if (o.WeightDecay > 0) Foreach.Mul_(parameters, 1 - o.Lr * o.WeightDecay);
    }
}
