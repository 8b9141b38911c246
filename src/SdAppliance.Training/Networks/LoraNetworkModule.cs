using SdAppliance.Formats.Adapters;
using SdAppliance.Models.Adapters;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Training.Networks;

/// <summary>
/// kohya's <c>LoRAModule</c> for one Linear or Conv2d: <c>lora_down</c> (in → rank, for a convolution
/// with the layer's kernel, stride and padding), <c>lora_up</c> (rank → out, 1×1 for a convolution) and
/// the <c>alpha</c> buffer. As the layer's <see cref="ILayerWrapper"/> it returns
/// <c>layer(x) + up(dropout(down(x))) · multiplier · alpha/rank</c>; kohya drops out after
/// <c>lora_down</c>, and only in training mode. With DoRA (<paramref name="weightDecompose"/>) it runs the layer on
/// the decomposed weight instead (<see cref="NetworkModule"/>), which has no place for dropout.
/// </summary>
public sealed class LoraNetworkModule : NetworkModule
{
    private readonly Module<Tensor, Tensor> loraDown;
    private readonly Module<Tensor, Tensor> loraUp;

    internal LoraNetworkModule(string loraName, Module layer, long rank, double alpha, double dropout, Generator? generator, bool weightDecompose = false)
        : base(loraName, layer, rank, alpha)
    {
        Dropout = dropout;
        var weight = LayerWeight;
        switch (layer)
        {
            case Linear linear:
                // The draws follow kohya: both layers are built (each drawing its default init), then
                // down is drawn again with kaiming_uniform(a=√5) and up zeroed.
                loraDown = new Linear(linear.InFeatures, rank, bias: false, weight.Device, DType.Float32, generator);
                loraUp = new Linear(rank, linear.OutFeatures, bias: false, weight.Device, DType.Float32, generator);
                break;
            case Conv2d conv:
                loraDown = new Conv2d(conv.InChannels, rank, conv.KernelSize, conv.Stride, conv.Padding, bias: false,
                    device: weight.Device, dtype: DType.Float32, generator: generator);
                loraUp = new Conv2d(rank, conv.OutChannels, 1, 1, bias: false, device: weight.Device, dtype: DType.Float32, generator: generator);
                break;
            default:
                throw new ArgumentException($"LoRA wraps Linear and Conv2d layers, not {layer.GetType().Name}", nameof(layer));
        }
        RegisterModule("lora_down", loraDown);
        RegisterModule("lora_up", loraUp);
        Init.KaimingUniform_(DownWeight, Math.Sqrt(5), generator);
        Init.Zeros_(UpWeight);
        if (weightDecompose) AddWeightDecomposition();
    }

    public override LoraAlgorithm Algorithm => LoraAlgorithm.Lora;

    public double Dropout { get; }

    public Tensor DownWeight => loraDown.GetParameter("weight")!;

    public Tensor UpWeight => loraUp.GetParameter("weight")!;

    public override Tensor ZeroInitialised => UpWeight;

    /// <summary>kohya's LoRA+ group: the <c>lora_up</c> weights.</summary>
    public override IReadOnlyList<Tensor> PlusParameters => [UpWeight];

    public override Tensor DeltaWeight() => LoraDeltas.Lora(UpWeight, DownWeight, LayerWeight.Shape);

    public override Tensor Forward(Tensor input, Func<Tensor, Tensor> layer)
    {
        if (DoraScale is not null) return base.Forward(input, layer);
        if (Multiplier != 0 && Layer is Linear && !(Dropout > 0 && IsTraining) && input.Dim >= 2
            && input.DType == DownWeight.DType && LayerWeight.DType == DownWeight.DType)
            return ForwardLinear(input, layer);
        var original = layer(input);
        if (Multiplier == 0) return original;
        try
        {
            var dtype = DownWeight.DType;
            // A half-precision model with float32 LoRA weights: the branch runs in the LoRA's dtype
            // (under autocast the ops cast it anyway) and is added back in the layer's dtype.
            using var x = input.DType == dtype ? input.Alias() : input.To(dtype);
            using var down = loraDown.Forward(x);
            using var dropped = Dropout > 0 && IsTraining ? Functional.Dropout(down, Dropout, training: true) : down.Alias();
            using var up = loraUp.Forward(dropped);
            using var scaled = up.Mul(Multiplier * Scale);
            using var cast = scaled.DType == original.DType ? scaled.Alias() : scaled.To(original.DType);
            return original.Add(cast);
        }
        finally
        {
            original.Dispose();
        }
    }

    /// <summary>
    /// A Linear's <c>layer(x) + down(x) · upᵀ · multiplier · scale</c> with the up projection, the scale and the sum in
    /// one addmm that accumulates the scaled low-rank product into a copy of the layer's output. Composed, they are three
    /// operations over the [tokens, out] output (and a fourth in backward, scaling its gradient); fused, backward applies
    /// the scale to the [tokens, rank] and [rank, out] gradients of the factors. The same sum, rounded once in the GEMM.
    /// </summary>
    private Tensor ForwardLinear(Tensor input, Func<Tensor, Tensor> layer)
    {
        using var original = layer(input);
        using var down = loraDown.Forward(input);
        var shape = original.Shape;
        using var original2d = original.Reshape(-1, shape[^1]);
        using var down2d = down.Reshape(-1, Rank);
        using var upT = UpWeight.T();
        using var sum = original2d.Addmm(down2d, upT, beta: 1, alpha: Multiplier * Scale);
        return sum.View(shape);
    }
}
