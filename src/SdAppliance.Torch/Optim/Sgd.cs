namespace SdAppliance.Torch.Optim;

/// <summary>Hyperparameters of <see cref="Sgd"/> (torch.optim.SGD defaults; PyTorch requires lr, here 1e-3).</summary>
public sealed record SgdOptions : OptimizerOptions
{
    public SgdOptions() => Lr = 1e-3;

    public double Momentum { get; init; }
    public double Dampening { get; init; }

    /// <summary>L2 penalty added to the gradient.</summary>
    public double WeightDecay { get; init; }

    public bool Nesterov { get; init; }
    public bool Maximize { get; init; }

    internal override void Validate()
    {
        base.Validate();
        Require(Momentum >= 0, $"invalid momentum value {Momentum}: it must be >= 0");
        Require(WeightDecay >= 0, $"invalid weight_decay value {WeightDecay}: it must be >= 0");
        Require(!Nesterov || (Momentum > 0 && Dampening == 0), "Nesterov momentum requires a momentum and zero dampening");
    }
}

/// <summary>torch.optim.SGD: stochastic gradient descent with optional (Nesterov) momentum.</summary>
public sealed class Sgd : Optimizer<SgdOptions>
{
    private const string Buffer = "momentum_buffer";

    public Sgd(IEnumerable<Tensor> parameters, SgdOptions? options = null) : base(parameters, options ?? new()) { }

    public Sgd(IEnumerable<ParamGroup<SgdOptions>> groups, SgdOptions? defaults = null) : base(groups, defaults ?? new()) { }

    private protected override IEnumerable<StateSpec> StateLayout(SgdOptions o, Tensor param) =>
        o.Momentum != 0 ? [new StateSpec(Buffer, param.Shape, param.DType)] : [];

    private protected override void Update(SgdOptions o, Tensor param, Tensor grad, ParamState state)
    {
        var d = o.Maximize ? grad.Neg() : grad;
        if (o.WeightDecay != 0) d = d.Add(param, o.WeightDecay);
        if (o.Momentum != 0)
        {
            // The first step seeds the buffer with the gradient itself, undampened, as PyTorch does.
            if (state.Tensors.TryGetValue(Buffer, out var buf)) buf.Mul_(o.Momentum).Add_(d, 1 - o.Dampening);
            else buf = state.Set(Buffer, d.Clone());
            d = o.Nesterov ? d.Add(buf, o.Momentum) : buf;
        }
        param.Add_(d, -o.Lr);
    }
}
