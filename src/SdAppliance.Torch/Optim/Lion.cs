namespace SdAppliance.Torch.Optim;

/// <summary>Hyperparameters of <see cref="Lion"/> (lion-pytorch defaults).</summary>
public sealed record LionOptions : OptimizerOptions
{
    public LionOptions() => Lr = 1e-4;

    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.99;

    /// <summary>Decoupled decay: the parameter shrinks by lr·weight_decay each step.</summary>
    public double WeightDecay { get; init; }

    internal override void Validate()
    {
        base.Validate();
        Require(Beta1 >= 0 && Beta1 <= 1, $"invalid beta1 {Beta1}: it must be in [0, 1]");
        Require(Beta2 >= 0 && Beta2 <= 1, $"invalid beta2 {Beta2}: it must be in [0, 1]");
        Require(WeightDecay >= 0, $"invalid weight_decay value {WeightDecay}: it must be >= 0");
    }
}

/// <summary>
/// Lion (Chen et al. 2023, as lucidrains/lion-pytorch): the step is the sign of an interpolation
/// between momentum and gradient, so every coordinate moves by exactly lr.
/// </summary>
public sealed class Lion : Optimizer<LionOptions>
{
    public Lion(IEnumerable<Tensor> parameters, LionOptions? options = null) : base(parameters, options ?? new()) { }

    public Lion(IEnumerable<ParamGroup<LionOptions>> groups, LionOptions? defaults = null) : base(groups, defaults ?? new()) { }

    private protected override IEnumerable<StateSpec> StateLayout(LionOptions o, Tensor param) =>
        [new StateSpec("exp_avg", param.Shape, param.DType)];

    private protected override void UpdateBatch(LionOptions o, IReadOnlyList<ParamSlot> batch)
    {
        var parameters = new Tensor[batch.Count];
        var grads = new Tensor[batch.Count];
        var expAvgs = new Tensor[batch.Count];
        for (var i = 0; i < batch.Count; i++)
        {
            var (param, grad, state) = batch[i];
            state.EnsureZeros(StateLayout(o, param), param.Device);
            parameters[i] = param;
            grads[i] = grad;
            expAvgs[i] = state["exp_avg"];
        }
        Update(parameters, grads, expAvgs, o.Lr, o.Beta1, o.Beta2, o.WeightDecay);
    }

    /// <summary>One Lion step of lists of parameters, gradients and momenta, one list operator per term.</summary>
    internal static void Update(Tensor[] parameters, Tensor[] grads, Tensor[] expAvgs, double lr, double beta1, double beta2, double weightDecay)
    {
        if (weightDecay != 0) Foreach.Mul_(parameters, 1 - lr * weightDecay);
        var updates = Foreach.Mul(expAvgs, beta1);
        Foreach.Add_(updates, grads, 1 - beta1);
        // libtorch 1.13 has no list sign: one call per tensor.
        foreach (var u in updates) u.Sign_();
        Foreach.Add_(parameters, updates, -lr);
        Foreach.Mul_(expAvgs, beta2);
        Foreach.Add_(expAvgs, grads, 1 - beta2);
    }
}
