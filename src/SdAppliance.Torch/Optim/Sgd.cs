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

    private protected override void UpdateBatch(SgdOptions o, IReadOnlyList<ParamSlot> batch)
    {
        var parameters = batch.Select(s => s.Param).ToArray();
        IReadOnlyList<Tensor> d = batch.Select(s => s.Grad).ToArray();
        if (o.Maximize) d = Foreach.Neg(d);
        if (o.WeightDecay != 0) d = Foreach.Add(d, parameters, o.WeightDecay);
        if (o.Momentum != 0)
        {
            var buffers = new Tensor[batch.Count];
            var stepped = new List<int>();
            for (var i = 0; i < batch.Count; i++)
            {
                // The first step seeds the buffer with the gradient itself, undampened, as PyTorch does.
                if (batch[i].State.Tensors.TryGetValue(Buffer, out var buf))
                {
                    buffers[i] = buf;
                    stepped.Add(i);
                }
                else buffers[i] = batch[i].State.Set(Buffer, d[i].Clone());
            }
            if (stepped.Count > 0)
            {
                var running = stepped.Select(i => buffers[i]).ToArray();
                Foreach.Mul_(running, o.Momentum);
                Foreach.Add_(running, stepped.Select(i => d[i]).ToArray(), 1 - o.Dampening);
            }
            d = o.Nesterov ? Foreach.Add(d, buffers, o.Momentum) : buffers;
        }
        Foreach.Add_(parameters, d, -o.Lr);
    }
}
