using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Training.Networks;

/// <summary>
/// kohya's <c>LoRAModule</c> for one Linear or Conv2d: <c>lora_down</c> (in → rank, for a convolution
/// with the layer's kernel, stride and padding), <c>lora_up</c> (rank → out, 1×1 for a convolution) and
/// the <c>alpha</c> buffer. As the layer's <see cref="ILayerWrapper"/> it returns
/// <c>layer(x) + up(dropout(down(x))) · multiplier · alpha/rank</c>; kohya drops out after
/// <c>lora_down</c>, and only in training mode.
/// </summary>
public sealed class LoraNetworkModule : Module, ILayerWrapper
{
    private readonly Module<Tensor, Tensor> loraDown;
    private readonly Module<Tensor, Tensor> loraUp;

    internal LoraNetworkModule(string loraName, Module layer, long rank, double alpha, double dropout, Generator? generator)
    {
        if (rank < 1) throw new ArgumentOutOfRangeException(nameof(rank), rank, "a LoRA rank must be at least 1");
        LoraName = loraName;
        Layer = layer;
        Rank = rank;
        Dropout = dropout;
        Tensor weight;
        switch (layer)
        {
            case Linear linear:
                weight = linear.Weight;
                // The draws follow kohya: both layers are built (each drawing its default init), then
                // down is drawn again with kaiming_uniform(a=√5) and up zeroed.
                loraDown = new Linear(linear.InFeatures, rank, bias: false, weight.Device, DType.Float32, generator);
                loraUp = new Linear(rank, linear.OutFeatures, bias: false, weight.Device, DType.Float32, generator);
                break;
            case Conv2d conv:
                weight = conv.Weight;
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
        // kohya: alpha None or 0 means alpha = rank (scale 1); the buffer is a float32 scalar.
        var effectiveAlpha = alpha == 0 ? rank : alpha;
        RegisterBuffer("alpha", torch.Scalar(effectiveAlpha, DType.Float32, weight.Device));
        Scale = effectiveAlpha / rank;
    }

    /// <summary>kohya's name ("lora_unet_…"), which is also this module's name in the network.</summary>
    public string LoraName { get; }

    /// <summary>The Linear or Conv2d this module adapts.</summary>
    public Module Layer { get; }

    public long Rank { get; }

    public double Dropout { get; }

    /// <summary>alpha / rank, from the <c>alpha</c> buffer.</summary>
    public double Scale { get; private set; }

    /// <summary>The network's multiplier (1 while training, the strength at inference).</summary>
    public double Multiplier { get; set; } = 1;

    public Tensor DownWeight => loraDown.GetParameter("weight")!;

    public Tensor UpWeight => loraUp.GetParameter("weight")!;

    public Tensor Alpha => GetBuffer("alpha")!;

    /// <summary>Re-reads the scale after the alpha buffer was loaded from a file.</summary>
    internal void RefreshScale()
    {
        var alpha = Alpha.Item();
        Scale = (alpha == 0 ? Rank : alpha) / Rank;
    }

    public Tensor Forward(Tensor input, Func<Tensor, Tensor> layer)
    {
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

    protected override string ExtraRepr() => $"{LoraName}, rank={Rank}, scale={Scale}";
}
