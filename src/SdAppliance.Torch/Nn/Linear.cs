namespace SdAppliance.Torch.Nn;

/// <summary>y = x Wᵀ + b, as <c>nn.Linear</c>; W is [out, in].</summary>
public sealed class Linear : Module<Tensor, Tensor>
{
    public Linear(long inFeatures, long outFeatures, bool bias = true, Device? device = null, DType dtype = DType.Float32, Generator? generator = null)
    {
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        var (w, b) = Init.LayerParameters([outFeatures, inFeatures], bias, device, dtype, generator);
        RegisterParameter("weight", w);
        RegisterParameter("bias", b);
    }

    public long InFeatures { get; }
    public long OutFeatures { get; }
    public Tensor Weight => GetParameter("weight")!;
    public Tensor? Bias => GetParameter("bias");

    /// <summary>Wraps this layer's forward (LoRA, hypernetworks); null runs the layer alone.</summary>
    public ILayerWrapper? Wrapper { get; set; }

    public override Tensor Forward(Tensor input) => Wrapper is null ? Plain(input) : Wrapper.Forward(input, plain ??= Plain);

    private Func<Tensor, Tensor>? plain;

    private Tensor Plain(Tensor input) => Functional.Linear(input, Weight, Bias);

    protected override string ExtraRepr() => $"in_features={InFeatures}, out_features={OutFeatures}, bias={(Bias is not null ? "True" : "False")}";
}
