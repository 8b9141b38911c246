namespace SdAppliance.Torch.Optim;

/// <summary>Hyperparameters of <see cref="Lion8bit"/> (bitsandbytes.optim.Lion8bit defaults).</summary>
public sealed record Lion8bitOptions : OptimizerOptions
{
    public Lion8bitOptions() => Lr = 1e-4;

    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.99;

    /// <summary>Decoupled decay: the parameter shrinks by lr·weight_decay each step.</summary>
    public double WeightDecay { get; init; }

    /// <summary>Parameters with fewer values keep a float32 momentum (bitsandbytes' min_8bit_size).</summary>
    public long MinEightBitSize { get; init; } = 4096;

    internal override void Validate()
    {
        base.Validate();
        Require(Beta1 >= 0 && Beta1 <= 1, $"invalid beta1 {Beta1}: it must be in [0, 1]");
        Require(Beta2 >= 0 && Beta2 <= 1, $"invalid beta2 {Beta2}: it must be in [0, 1]");
        Require(WeightDecay >= 0, $"invalid weight_decay value {WeightDecay}: it must be >= 0");
        Require(MinEightBitSize >= 0, $"invalid min_8bit_size {MinEightBitSize}: it must be >= 0");
    }
}

/// <summary>
/// <see cref="Lion"/> with an 8-bit momentum, as bitsandbytes' block-wise Lion8bit: the momentum is dequantised, the
/// parameter moves by lr·sign(β1·m + (1−β1)·g), the momentum becomes β2·m + (1−β2)·g and is quantised again.
/// </summary>
public sealed class Lion8bit : Optimizer<Lion8bitOptions>
{
    public Lion8bit(IEnumerable<Tensor> parameters, Lion8bitOptions? options = null) : base(parameters, options ?? new()) { }

    public Lion8bit(IEnumerable<ParamGroup<Lion8bitOptions>> groups, Lion8bitOptions? defaults = null) : base(groups, defaults ?? new()) { }

    /// <summary>CPU parameters step in the shim's fused kernel (false: the same step composed of operators, as on CUDA).</summary>
    internal bool UseCpuKernel { get; init; } = true;

    private protected override IEnumerable<StateSpec> StateLayout(Lion8bitOptions o, Tensor param) => EightBitState.Layout(param, o.MinEightBitSize, states: 1);

    private protected override void UpdateBatch(Lion8bitOptions o, IReadOnlyList<ParamSlot> batch)
    {
        var plain = EightBitState.StepEachQuantised(batch, param => StateLayout(o, param), slot =>
        {
            var (param, grad, state) = slot;
            if (UseCpuKernel && EightBitState.FitsTheCpuKernel(param, grad, state))
            {
                EightBitState.StepOnCpu(adam: false, param, grad, state, o.Beta1, o.Beta2, eps: 0, o.Lr, o.WeightDecay);
                return;
            }
            var m = EightBitState.Read(state, 1, signed: true);
            if (o.WeightDecay != 0) param.Mul_(1 - o.Lr * o.WeightDecay);
            param.Add_(m.Mul(o.Beta1).Add_(grad, 1 - o.Beta1).Sign_(), -o.Lr);
            m.Mul_(o.Beta2).Add_(grad, 1 - o.Beta2);
            EightBitState.Write(state, 1, m, signed: true);
        });
        if (plain.Count > 0) Lion.Update(plain.Select(s => s.Param).ToArray(), plain.Select(s => s.Grad).ToArray(),
            plain.Select(s => s.State["state1"]).ToArray(), o.Lr, o.Beta1, o.Beta2, o.WeightDecay);
    }
}
