namespace SdAppliance.Torch.Nn;

/// <summary>A (height, width) pair that a single number converts to, as PyTorch's <c>_pair</c>.</summary>
public readonly record struct Pair(long H, long W)
{
    public static implicit operator Pair(long both) => new(both, both);
    public static implicit operator Pair((long H, long W) pair) => new(pair.H, pair.W);

    public long[] ToArray() => [H, W];

    public override string ToString() => $"({H}, {W})";
}

/// <summary>2-D convolution, as <c>nn.Conv2d</c> with zero padding; the weight is [out, in/groups, kH, kW].</summary>
public sealed class Conv2d : Module<Tensor, Tensor>
{
    public Conv2d(long inChannels, long outChannels, Pair kernelSize, Pair? stride = null, Pair? padding = null, Pair? dilation = null,
        long groups = 1, bool bias = true, Device? device = null, DType dtype = DType.Float32, Generator? generator = null)
    {
        if (groups <= 0 || inChannels % groups != 0 || outChannels % groups != 0)
            throw new ArgumentException($"in_channels ({inChannels}) and out_channels ({outChannels}) must be divisible by groups ({groups})", nameof(groups));
        InChannels = inChannels;
        OutChannels = outChannels;
        KernelSize = kernelSize;
        Stride = stride ?? 1;
        Padding = padding ?? 0;
        Dilation = dilation ?? 1;
        Groups = groups;
        var (w, b) = Init.LayerParameters([outChannels, inChannels / groups, kernelSize.H, kernelSize.W], bias, device, dtype, generator);
        RegisterParameter("weight", w);
        RegisterParameter("bias", b);
    }

    public long InChannels { get; }
    public long OutChannels { get; }
    public Pair KernelSize { get; }
    public Pair Stride { get; }
    public Pair Padding { get; }
    public Pair Dilation { get; }
    public long Groups { get; }
    public Tensor Weight => GetParameter("weight")!;
    public Tensor? Bias => GetParameter("bias");

    /// <summary>Wraps this layer's forward (LoRA, hypernetworks); null runs the layer alone.</summary>
    public ILayerWrapper? Wrapper { get; set; }

    public override Tensor Forward(Tensor input) => Wrapper is null ? Plain(input) : Wrapper.Forward(input, plain ??= Plain);

    private Func<Tensor, Tensor>? plain;

    private Tensor Plain(Tensor input) => Functional.Conv2d(input, Weight, Bias, Stride.ToArray(), Padding.ToArray(), Dilation.ToArray(), Groups);

    protected override string ExtraRepr()
    {
        // PyTorch prints only what differs from the defaults.
        var s = $"{InChannels}, {OutChannels}, kernel_size={KernelSize}, stride={Stride}";
        if (Padding != new Pair(0, 0)) s += $", padding={Padding}";
        if (Dilation != new Pair(1, 1)) s += $", dilation={Dilation}";
        if (Groups != 1) s += $", groups={Groups}";
        if (Bias is null) s += ", bias=False";
        return s;
    }
}
