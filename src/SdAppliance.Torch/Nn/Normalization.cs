namespace SdAppliance.Torch.Nn;

/// <summary>Group normalisation over channel groups, as <c>nn.GroupNorm</c>; affine weight ones, bias zeros.</summary>
public sealed class GroupNorm : Module<Tensor, Tensor>
{
    public GroupNorm(long numGroups, long numChannels, double eps = 1e-5, bool affine = true, Device? device = null, DType dtype = DType.Float32)
    {
        if (numGroups <= 0 || numChannels % numGroups != 0)
            throw new ArgumentException($"num_channels ({numChannels}) must be divisible by num_groups ({numGroups})", nameof(numGroups));
        NumGroups = numGroups;
        NumChannels = numChannels;
        Eps = eps;
        Affine = affine;
        RegisterParameter("weight", affine ? torch.Ones([numChannels], dtype, device) : null);
        RegisterParameter("bias", affine ? torch.Zeros([numChannels], dtype, device) : null);
    }

    public long NumGroups { get; }
    public long NumChannels { get; }
    public double Eps { get; }
    public bool Affine { get; }
    public Tensor? Weight => GetParameter("weight");
    public Tensor? Bias => GetParameter("bias");

    public override Tensor Forward(Tensor input) => Functional.GroupNorm(input, NumGroups, Weight, Bias, Eps);

    protected override string ExtraRepr() => $"{NumGroups}, {NumChannels}, eps={Eps:R}, affine={(Affine ? "True" : "False")}";
}

/// <summary>Normalisation over the trailing <see cref="NormalizedShape"/> dimensions, as <c>nn.LayerNorm</c>.</summary>
public sealed class LayerNorm : Module<Tensor, Tensor>
{
    public LayerNorm(long normalizedShape, double eps = 1e-5, bool elementwiseAffine = true, bool bias = true, Device? device = null, DType dtype = DType.Float32)
        : this([normalizedShape], eps, elementwiseAffine, bias, device, dtype)
    {
    }

    public LayerNorm(long[] normalizedShape, double eps = 1e-5, bool elementwiseAffine = true, bool bias = true, Device? device = null, DType dtype = DType.Float32)
    {
        NormalizedShape = [.. normalizedShape];
        Eps = eps;
        ElementwiseAffine = elementwiseAffine;
        RegisterParameter("weight", elementwiseAffine ? torch.Ones(normalizedShape, dtype, device) : null);
        RegisterParameter("bias", elementwiseAffine && bias ? torch.Zeros(normalizedShape, dtype, device) : null);
    }

    public IReadOnlyList<long> NormalizedShape { get; }
    public double Eps { get; }
    public bool ElementwiseAffine { get; }
    public Tensor? Weight => GetParameter("weight");
    public Tensor? Bias => GetParameter("bias");

    public override Tensor Forward(Tensor input) => Functional.LayerNorm(input, [.. NormalizedShape], Weight, Bias, Eps);

    protected override string ExtraRepr() =>
        $"({string.Join(", ", NormalizedShape)}{(NormalizedShape.Count == 1 ? "," : "")}), eps={Eps:R}, elementwise_affine={(ElementwiseAffine ? "True" : "False")}";
}
