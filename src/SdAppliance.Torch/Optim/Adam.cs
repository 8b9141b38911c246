using SdAppliance.Torch.Native;

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

/// <summary>torch.optim.Adam (the single-tensor update's operations in the same order, applied to lists of tensors).</summary>
public sealed class Adam : Optimizer<AdamOptions>
{
    public Adam(IEnumerable<Tensor> parameters, AdamOptions? options = null) : base(parameters, options ?? new()) { }

    public Adam(IEnumerable<ParamGroup<AdamOptions>> groups, AdamOptions? defaults = null) : base(groups, defaults ?? new()) { }

    private protected override IEnumerable<StateSpec> StateLayout(AdamOptions o, Tensor param) => AdamMath.Layout(param, o.Amsgrad);

    private protected override long MaxBatchElements(Device device) => AdamMath.MaxBatchElements(device) ?? base.MaxBatchElements(device);

    private protected override void UpdateBatch(AdamOptions o, IReadOnlyList<ParamSlot> batch) =>
        AdamMath.Update(batch, o.Lr, o.Beta1, o.Beta2, o.Eps, o.WeightDecay, decoupled: false, o.Amsgrad, o.Maximize);
}

/// <summary>torch.optim.AdamW: Adam with decoupled weight decay.</summary>
public sealed class AdamW : Optimizer<AdamWOptions>
{
    public AdamW(IEnumerable<Tensor> parameters, AdamWOptions? options = null) : base(parameters, options ?? new()) { }

    public AdamW(IEnumerable<ParamGroup<AdamWOptions>> groups, AdamWOptions? defaults = null) : base(groups, defaults ?? new()) { }

    private protected override IEnumerable<StateSpec> StateLayout(AdamWOptions o, Tensor param) => AdamMath.Layout(param, o.Amsgrad);

    private protected override long MaxBatchElements(Device device) => AdamMath.MaxBatchElements(device) ?? base.MaxBatchElements(device);

    private protected override void UpdateBatch(AdamWOptions o, IReadOnlyList<ParamSlot> batch) =>
        AdamMath.Update(batch, o.Lr, o.Beta1, o.Beta2, o.Eps, o.WeightDecay, decoupled: true, o.Amsgrad, o.Maximize);
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

    /// <summary>A CPU batch is stepped tensor by tensor in the shim (each one in cache by itself): no limit there.</summary>
    public static long? MaxBatchElements(Device device) => device.Type == DeviceType.Cpu ? long.MaxValue : null;

    /// <summary>One Adam(W) step of a batch that shares a step count: per formula term one list operator for all of them.</summary>
    public static void Update(IReadOnlyList<ParamSlot> batch, double lr, double beta1, double beta2, double eps,
        double weightDecay, bool decoupled, bool amsgrad, bool maximize)
    {
        var n = batch.Count;
        var parameters = new Tensor[n];
        var grads = new Tensor[n];
        var expAvgs = new Tensor[n];
        var expAvgSqs = new Tensor[n];
        var maxExpAvgSqs = amsgrad ? new Tensor[n] : [];
        for (var i = 0; i < n; i++)
        {
            var (param, grad, state) = batch[i];
            state.EnsureZeros(Layout(param, amsgrad), param.Device);
            parameters[i] = param;
            grads[i] = grad;
            expAvgs[i] = state["exp_avg"];
            expAvgSqs[i] = state["exp_avg_sq"];
            if (amsgrad) maxExpAvgSqs[i] = state["max_exp_avg_sq"];
        }

        double step = batch[0].State.Step;
        var biasCorrection1 = 1 - Math.Pow(beta1, step);
        var biasCorrection2 = 1 - Math.Pow(beta2, step);
        var stepSize = lr / biasCorrection1;
        var biasCorrection2Sqrt = Math.Sqrt(biasCorrection2);

        // A batch shares its device. On CPU the list operators are loops over the tensors on the calling thread, eight
        // sweeps of the list; the shim steps each tensor whole with the same operators and shares the tensors out
        // across the threads: the same bits, and bench-vs-torch's adamw_step (a LoRA's 384 tensors, 2 threads) took 0.7 of
        // PyTorch's _foreach step where the list operators had taken 0.97.
        if (parameters[0].Device.Type == DeviceType.Cpu)
        {
            StepOnCpu(parameters, grads, expAvgs, expAvgSqs, amsgrad ? maxExpAvgSqs : null, lr, beta1, beta2, eps, weightDecay,
                decoupled, maximize, stepSize, biasCorrection2Sqrt);
            return;
        }

        IReadOnlyList<Tensor> g = maximize ? Foreach.Neg(grads) : grads;
        if (weightDecay != 0)
        {
            if (decoupled) Foreach.Mul_(parameters, 1 - lr * weightDecay);
            else g = Foreach.Add(g, parameters, weightDecay);
        }

        Foreach.Lerp_(expAvgs, g, 1 - beta1);
        Foreach.Mul_(expAvgSqs, beta2);
        Foreach.Addcmul_(expAvgSqs, g, g, 1 - beta2);

        var second = expAvgSqs;
        if (amsgrad)
        {
            Foreach.Maximum_(maxExpAvgSqs, expAvgSqs);
            second = maxExpAvgSqs;
        }
        var denoms = Foreach.Sqrt(second);
        Foreach.Div_(denoms, biasCorrection2Sqrt);
        Foreach.Add_(denoms, eps);
        Foreach.Addcdiv_(parameters, expAvgs, denoms, -stepSize);
    }

    private static unsafe void StepOnCpu(Tensor[] parameters, Tensor[] grads, Tensor[] expAvgs, Tensor[] expAvgSqs, Tensor[]? maxExpAvgSqs,
        double lr, double beta1, double beta2, double eps, double weightDecay, bool decoupled, bool maximize, double stepSize,
        double biasCorrection2Sqrt)
    {
        var n = parameters.Length;
        var handles = new IntPtr[(maxExpAvgSqs is null ? 4 : 5) * n];
        for (var i = 0; i < n; i++)
        {
            handles[i] = parameters[i].Handle;
            handles[n + i] = grads[i].Handle;
            handles[2 * n + i] = expAvgs[i].Handle;
            handles[3 * n + i] = expAvgSqs[i].Handle;
            if (maxExpAvgSqs is not null) handles[4 * n + i] = maxExpAvgSqs[i].Handle;
        }
        fixed (IntPtr* h = handles)
            LibSdTorch.Check(LibSdTorch.sdt_optim_adam_step_cpu(h, h + n, h + 2 * n, h + 3 * n, maxExpAvgSqs is null ? null : h + 4 * n, n,
                lr, beta1, beta2, eps, weightDecay, decoupled ? 1 : 0, maximize ? 1 : 0, stepSize, biasCorrection2Sqrt));
        // The handles are the tensors' own: they must not be finalised before the call returns.
        GC.KeepAlive(parameters);
        GC.KeepAlive(grads);
        GC.KeepAlive(expAvgs);
        GC.KeepAlive(expAvgSqs);
        GC.KeepAlive(maxExpAvgSqs);
    }
}
