using SdAppliance.Formats.Adapters;
using SdAppliance.Models.Adapters;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Training.Networks;

/// <summary>
/// One trained adapter on one Linear or Conv2d, whatever its algorithm (LoRA, LyCORIS LoHa or LoKr): its name in the
/// file, the layer, the <c>alpha</c> buffer and the scale alpha/rank, and with DoRA (LyCORIS's <c>dora_wd</c>) the
/// learned magnitude vector <c>dora_scale</c>. As the layer's <see cref="ILayerWrapper"/> it returns the layer's output
/// with the weight delta added, <c>layer(x) + op(x, multiplier · scale · Δ)</c>, Δ being the algorithm's formula
/// (<see cref="LoraDeltas"/>, the one the generation path merges with); with DoRA the layer runs on
/// <c>W + multiplier · (DoRA(W + scale · Δ) − W)</c> instead, as LyCORIS trains and A1111/ComfyUI merge it.
/// </summary>
public abstract class NetworkModule : Module, ILayerWrapper
{
    protected NetworkModule(string loraName, Module layer, long rank, double alpha)
    {
        if (rank < 1) throw new ArgumentOutOfRangeException(nameof(rank), rank, "a LoRA rank must be at least 1");
        LoraName = loraName;
        Layer = layer;
        Rank = rank;
        (LayerWeight, LayerBias) = layer switch
        {
            Linear linear => (linear.Weight, linear.Bias),
            Conv2d conv => (conv.Weight, conv.Bias),
            _ => throw new ArgumentException($"LoRA wraps Linear and Conv2d layers, not {layer.GetType().Name}", nameof(layer)),
        };
        // kohya and LyCORIS: alpha None or 0 means alpha = rank (scale 1); the buffer is a float32 scalar.
        var effectiveAlpha = alpha == 0 ? rank : alpha;
        RegisterBuffer("alpha", torch.Scalar(effectiveAlpha, DType.Float32, LayerWeight.Device));
        Scale = effectiveAlpha / rank;
        // Absent until AddWeightDecomposition: an absent parameter is in no listing or state dict.
        RegisterParameter(LoraKeys.DoraScalePart, null);
    }

    /// <summary>kohya's name ("lora_unet_…"), which is also this module's name in the network.</summary>
    public string LoraName { get; }

    /// <summary>The Linear or Conv2d this module adapts.</summary>
    public Module Layer { get; }

    public abstract LoraAlgorithm Algorithm { get; }

    public long Rank { get; }

    /// <summary>alpha / rank, from the <c>alpha</c> buffer.</summary>
    public double Scale { get; private set; }

    /// <summary>The network's multiplier (1 while training, the strength at inference).</summary>
    public double Multiplier { get; set; } = 1;

    public Tensor Alpha => GetBuffer("alpha")!;

    /// <summary>DoRA's magnitude vector [1, in, 1…] (the norms of the layer's input columns at the start), or null without DoRA.</summary>
    public Tensor? DoraScale => GetParameter(LoraKeys.DoraScalePart);

    /// <summary>The factor that starts at zero, so that a new module leaves the model as it was (LoRA's lora_up, LoHa's hada_w2_a, LoKr's w2 or w2_b).</summary>
    public abstract Tensor ZeroInitialised { get; }

    /// <summary>The parameters LoRA+ trains at ratio × the learning rate (LoRA's lora_up); none for the other algorithms.</summary>
    public virtual IReadOnlyList<Tensor> PlusParameters => [];

    protected Tensor LayerWeight { get; }

    protected Tensor? LayerBias { get; }

    /// <summary>Adds DoRA's magnitude vector, initialised to the layer's column norms (call once, from the constructor).</summary>
    protected void AddWeightDecomposition()
    {
        using var noGrad = Autograd.NoGrad();
        using var weight = LayerWeight.To(DType.Float32);
        RegisterParameter(LoraKeys.DoraScalePart, LoraDeltas.ColumnNorms(weight));
    }

    /// <summary>Re-reads the scale after the alpha buffer was loaded from a file.</summary>
    internal void RefreshScale()
    {
        var alpha = Alpha.Item();
        Scale = (alpha == 0 ? Rank : alpha) / Rank;
    }

    /// <summary>The unscaled delta Δ in the layer weight's shape, float32, with autograd's graph to the factors.</summary>
    public abstract Tensor DeltaWeight();

    public virtual Tensor Forward(Tensor input, Func<Tensor, Tensor> layer)
    {
        if (Multiplier == 0) return layer(input);
        using var scope = torch.NewDisposeScope();
        using var delta = DeltaWeight();
        Tensor result;
        if (DoraScale is { } magnitude)
        {
            // The layer runs on its DoRA weight: W + m·(DoRA(W + s·Δ) − W).
            var weight = LayerWeight.To(DType.Float32);
            var difference = LoraDeltas.Dora(weight, delta.Mul(Scale), magnitude);
            var adapted = weight.Add(difference.Mul(Multiplier)).To(LayerWeight.DType);
            result = Apply(input, adapted, LayerBias);
        }
        else
        {
            var original = layer(input);
            var scaled = delta.Mul(Multiplier * Scale).To(LayerWeight.DType);
            result = original.Add(Apply(input, scaled, null));
        }
        return result.MoveToOuterScope();
    }

    // The layer's own operation (linear, or the convolution with its stride, padding, dilation and groups) on another weight.
    private Tensor Apply(Tensor input, Tensor weight, Tensor? bias)
    {
        // Under autocast the op casts both anyway; without it the input is in the model's dtype already, as a rule.
        using var x = input.DType == weight.DType ? input.Alias() : input.To(weight.DType);
        return Layer switch
        {
            Conv2d conv => Functional.Conv2d(x, weight, bias, conv.Stride.ToArray(), conv.Padding.ToArray(), conv.Dilation.ToArray(), conv.Groups),
            _ => Functional.Linear(x, weight, bias),
        };
    }

    protected override string ExtraRepr() => $"{LoraName}, {Algorithm}, rank={Rank}, scale={Scale}";
}
