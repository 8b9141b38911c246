using SdAppliance.Formats;
using SdAppliance.Formats.Adapters;
using SdAppliance.Models.Adapters;
using SdAppliance.Models.Loading;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Unet;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using SdAppliance.Torch.Serialization;

namespace SdAppliance.Training.Networks;

/// <summary>
/// kohya's <c>LoRANetwork</c> options. <paramref name="NetworkAlpha"/> 0 means alpha = rank (scale 1), as kohya.
/// <paramref name="ConvDim"/> adds LoCon (kohya's "C3Lier") on the 3×3 convolutions of the UNet's resnets and
/// samplers, at <paramref name="ConvAlpha"/> (kohya's default 1 when not given). <see cref="Algorithm"/> picks LyCORIS's
/// LoHa or LoKr instead of LoRA, <see cref="WeightDecompose"/> adds DoRA, and the block lists (one value per UNet block,
/// <see cref="LoraBlocks"/>) give each block its own rank and alpha, as kohya's block_dims.
/// </summary>
public sealed record LoraNetworkOptions(int NetworkDim = 16, double NetworkAlpha = 8, double Dropout = 0,
    bool TrainUnet = true, bool TrainTextEncoder = false, int? ConvDim = null, double? ConvAlpha = null)
{
    /// <summary>LoRA (kohya's networks.lora), or LyCORIS's LoHa or LoKr (lycoris.kohya with algo=loha|lokr).</summary>
    public LoraAlgorithm Algorithm { get; init; } = LoraAlgorithm.Lora;

    /// <summary>LoKr: LyCORIS's <c>factor</c>, the largest small side of each split (-1: the split nearest the square root).</summary>
    public int LokrFactor { get; init; } = -1;

    /// <summary>LoKr: LyCORIS's <c>decompose_both</c>, making the small factor low-rank too.</summary>
    public bool LokrDecomposeBoth { get; init; }

    /// <summary>LoHa/LoKr: LyCORIS's <c>use_tucker</c>, the k×k convolutions' factors as Tucker decompositions (hada_t1/t2, lokr_t2).</summary>
    public bool UseTucker { get; init; }

    /// <summary>DoRA: LyCORIS's <c>dora_wd</c>, a learned magnitude per input column beside the algorithm's delta.</summary>
    public bool WeightDecompose { get; init; }

    /// <summary>Per UNet block, the rank of its Linear and 1×1 modules (0: no module there); null: network_dim everywhere.</summary>
    public IReadOnlyList<int>? BlockDims { get; init; }

    /// <summary>Per UNet block, the alpha beside <see cref="BlockDims"/>.</summary>
    public IReadOnlyList<double>? BlockAlphas { get; init; }

    /// <summary>Per UNet block, the rank of its 3×3 convolutions (0: none); null with <see cref="BlockDims"/> and no conv_dim: no LoCon.</summary>
    public IReadOnlyList<int>? ConvBlockDims { get; init; }

    /// <summary>Per UNet block, the alpha beside <see cref="ConvBlockDims"/>.</summary>
    public IReadOnlyList<double>? ConvBlockAlphas { get; init; }

    /// <summary>
    /// The <c>ss_network_args</c> kohya writes for these options beyond conv_dim/conv_alpha (algo, factor, dora_wd, the
    /// block lists as typed…), as the strings a user gives in <c>--network_args</c>.
    /// </summary>
    public IReadOnlyDictionary<string, string> ExtraArgs { get; init; } = new Dictionary<string, string>();

    /// <summary>Throws, naming the field, when the options cannot make a network.</summary>
    public void Validate()
    {
        if (NetworkDim < 1) throw new ArgumentOutOfRangeException(nameof(NetworkDim), NetworkDim, "network_dim (the LoRA rank) must be at least 1");
        if (NetworkAlpha < 0 || !double.IsFinite(NetworkAlpha)) throw new ArgumentOutOfRangeException(nameof(NetworkAlpha), NetworkAlpha, "network_alpha must be a finite number ≥ 0 (0 means alpha = rank)");
        if (Dropout is < 0 or >= 1 || double.IsNaN(Dropout)) throw new ArgumentOutOfRangeException(nameof(Dropout), Dropout, "network_dropout must be in [0, 1)");
        if (ConvDim is < 1) throw new ArgumentOutOfRangeException(nameof(ConvDim), ConvDim, "conv_dim must be at least 1 (leave it out for no LoCon)");
        if (ConvAlpha is { } a && (a < 0 || !double.IsFinite(a))) throw new ArgumentOutOfRangeException(nameof(ConvAlpha), ConvAlpha, "conv_alpha must be a finite number ≥ 0");
        if (ConvAlpha is not null && ConvDim is null && ConvBlockDims is null) throw new ArgumentException("conv_alpha is set but conv_dim is not: give conv_dim to train the 3x3 convolutions", nameof(ConvAlpha));
        if (!TrainUnet && !TrainTextEncoder) throw new ArgumentException("a LoRA must train the UNet, the text encoder, or both", nameof(TrainUnet));
        if (Dropout > 0 && (Algorithm != LoraAlgorithm.Lora || WeightDecompose))
            throw new ArgumentException("network_dropout drops LoRA's rank activations; LoHa, LoKr and DoRA build the whole weight delta, which has none (LyCORIS ignores it too): leave it 0", nameof(Dropout));
        if (LokrFactor == 0 || LokrFactor < -1) throw new ArgumentOutOfRangeException(nameof(LokrFactor), LokrFactor, "lokr_factor must be -1 (the balanced split) or a positive number");
        if ((BlockDims is null) != (BlockAlphas is null) || (ConvBlockDims is null) != (ConvBlockAlphas is null) || BlockDims?.Count != BlockAlphas?.Count
            || ConvBlockDims?.Count != ConvBlockAlphas?.Count)
            throw new ArgumentException("block_dims and block_alphas (and conv_block_dims and conv_block_alphas) come in pairs of equal length", nameof(BlockDims));
        if (BlockDims?.Any(d => d < 0) == true || ConvBlockDims?.Any(d => d < 0) == true)
            throw new ArgumentOutOfRangeException(nameof(BlockDims), "block ranks must be ≥ 0 (0: no module in that block)");
    }

    /// <summary>kohya's default conv_alpha when conv_dim is given without one.</summary>
    public double EffectiveConvAlpha => ConvAlpha ?? 1.0;

    /// <summary>Whether the UNet's 3×3 convolutions get modules: conv_dim, or a conv_block_dims list.</summary>
    public bool TrainsConv3x3 => ConvDim is not null || ConvBlockDims is not null;

    /// <summary>The rank and alpha of one UNet or text-encoder target, by kohya's rules; rank 0 means no module there.</summary>
    public (int Rank, double Alpha) RankOf(KohyaLoraTarget target, bool isSdxl)
    {
        var block = target.Target == LoraTarget.Unet && BlockDims is not null ? LoraBlocks.Index(target.LoraName, isSdxl) : -1;
        if (block >= 0)
            return target.IsConv3x3
                ? ConvBlockDims is null ? (0, 0) : (ConvBlockDims[block], ConvBlockAlphas![block])
                : (BlockDims![block], BlockAlphas![block]);
        return target.IsConv3x3 ? (ConvDim ?? 0, EffectiveConvAlpha) : (NetworkDim, NetworkAlpha);
    }
}

/// <summary>
/// kohya's LoRANetwork: one <see cref="NetworkModule"/> (LoRA's lora_down, lora_up, alpha; LyCORIS's LoHa or LoKr tensors) per targeted
/// Linear/Conv2d (<see cref="LoraModelNames.KohyaUnetTargets"/>), attached through the layer's <see cref="ILayerWrapper"/>
/// slot, so the model's own weights and state dict stay untouched. The network's state dict is a
/// kohya LoRA file: "lora_unet_…" (SDXL: original-layout UNet names), "lora_te_…" (SDXL "lora_te1_…",
/// "lora_te2_…"), each with ".lora_down.weight", ".lora_up.weight" and ".alpha"; text-encoder modules
/// first, as kohya registers them. A new network is in training mode (its dropout active), as kohya's;
/// call <c>Eval()</c> before sampling with it.
/// </summary>
public sealed class LoraNetwork : Module, IDisposable
{
    private readonly List<NetworkModule> textEncoderModules = [];
    private readonly List<NetworkModule> unetModules = [];
    private double multiplier = 1;

    private LoraNetwork(LoraNetworkOptions options) => Options = options;

    public LoraNetworkOptions Options { get; }

    /// <summary>Strength of every module (kohya's multiplier): 1 while training.</summary>
    public double Multiplier
    {
        get => multiplier;
        set
        {
            multiplier = value;
            foreach (var m in Loras) m.Multiplier = value;
        }
    }

    /// <summary>Text-encoder modules then UNet modules.</summary>
    public IReadOnlyList<NetworkModule> Loras => [.. textEncoderModules, .. unetModules];

    public IReadOnlyList<NetworkModule> UnetModules => unetModules;

    public IReadOnlyList<NetworkModule> TextEncoderModules => textEncoderModules;

    /// <summary>The trained tensors of the UNet modules (the optimizer's UNet group).</summary>
    public IReadOnlyList<Tensor> UnetParameters => [.. unetModules.SelectMany(m => m.Parameters())];

    /// <summary>The trained tensors of the text-encoder modules.</summary>
    public IReadOnlyList<Tensor> TextEncoderParameters => [.. textEncoderModules.SelectMany(m => m.Parameters())];

    public bool IsAttached { get; private set; }

    /// <summary>Builds the network for <paramref name="model"/> and attaches it.</summary>
    public static LoraNetwork Create(StableDiffusionModel model, LoraNetworkOptions options, Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        return Create(model.Unet, model.TextEncoder, model.TextEncoder2, options, generator);
    }

    /// <summary>
    /// Builds the network over the given modules and attaches it; <paramref name="textEncoder2"/>
    /// (SDXL) switches to SDXL naming. The LoRA weights are float32 on each layer's device.
    /// </summary>
    public static LoraNetwork Create(UNet2DConditionModel unet, ClipTextModel textEncoder, ClipTextModel? textEncoder2,
        LoraNetworkOptions options, Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(unet);
        ArgumentNullException.ThrowIfNull(textEncoder);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var isSdxl = textEncoder2 is not null;
        var network = new LoraNetwork(options);
        try
        {
            // kohya creates the text-encoder modules first (and registers them first).
            network.IsSdxl = isSdxl;
            if (options.TrainTextEncoder)
            {
                var te = LoraModelNames.KohyaTextEncoderTargets(textEncoder, LoraTarget.TextEncoder, isSdxl);
                if (isSdxl) te.AddRange(LoraModelNames.KohyaTextEncoderTargets(textEncoder2!, LoraTarget.TextEncoder2, isSdxl));
                foreach (var target in te)
                    if (network.Build(target, generator) is { } module) network.textEncoderModules.Add(module);
            }
            if (options.TrainUnet)
                foreach (var target in LoraModelNames.KohyaUnetTargets(unet, isSdxl, includeConv3x3: options.TrainsConv3x3))
                    if (network.Build(target, generator) is { } module) network.unetModules.Add(module);
            network.Attach();
            return network;
        }
        catch
        {
            network.Dispose();
            throw;
        }
    }

    // A target whose block has rank 0 gets no module (kohya skips it); the rest get the options' algorithm.
    private NetworkModule? Build(KohyaLoraTarget target, Generator? generator)
    {
        var (rank, alpha) = Options.RankOf(target, IsSdxl);
        if (rank == 0) return null;
        NetworkModule module = Options.Algorithm switch
        {
            LoraAlgorithm.Loha => new LohaNetworkModule(target.LoraName, target.Layer, rank, alpha, generator, Options.WeightDecompose, Options.UseTucker),
            LoraAlgorithm.Lokr => new LokrNetworkModule(target.LoraName, target.Layer, rank, alpha, Options.LokrFactor, Options.LokrDecomposeBoth, generator,
                Options.WeightDecompose, Options.UseTucker),
            _ => new LoraNetworkModule(target.LoraName, target.Layer, rank, alpha, Options.Dropout, generator, Options.WeightDecompose),
        };
        module.Multiplier = multiplier;
        return RegisterModule(target.LoraName, module);
    }

    /// <summary>Whether the network was made for SDXL (its UNet names and block numbering are the original layout's).</summary>
    public bool IsSdxl { get; private set; }

    /// <summary>The UNet block (<see cref="LoraBlocks.Index"/>) of one of this network's modules, -1 for a text-encoder module.</summary>
    public int BlockOf(NetworkModule module) => unetModules.Contains(module) ? LoraBlocks.Index(module.LoraName, IsSdxl) : -1;

    /// <summary>Sets each module as its layer's wrapper; a layer already wrapped by something else is an error.</summary>
    public void Attach()
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        foreach (var m in Loras)
        {
            var current = WrapperOf(m.Layer);
            if (current is not null && !ReferenceEquals(current, m))
                throw new InvalidOperationException($"layer of {m.LoraName} already has a wrapper ({current.GetType().Name}); detach it first");
        }
        foreach (var m in Loras) SetWrapper(m.Layer, m);
        IsAttached = true;
    }

    /// <summary>Removes this network's wrappers: the model computes exactly what it did before.</summary>
    public void Detach()
    {
        foreach (var m in Loras)
            if (ReferenceEquals(WrapperOf(m.Layer), m)) SetWrapper(m.Layer, null);
        IsAttached = false;
    }

    internal static ILayerWrapper? WrapperOf(Module layer) => layer switch
    {
        Linear l => l.Wrapper,
        Conv2d c => c.Wrapper,
        _ => null,
    };

    internal static void SetWrapper(Module layer, ILayerWrapper? wrapper)
    {
        switch (layer)
        {
            case Linear l: l.Wrapper = wrapper; break;
            case Conv2d c: c.Wrapper = wrapper; break;
            default: throw new ArgumentException($"{layer.GetType().Name} has no wrapper slot", nameof(layer));
        }
    }

    /// <summary>Loads a file this network saved (resume): every key must match, in name and shape.</summary>
    public void Load(string path)
    {
        var tensors = TensorFiles.Load(path);
        try
        {
            try
            {
                LoadStateDict(tensors, strict: true);
            }
            catch (StateDictException e)
            {
                throw new UserInputException(path, $"is not a LoRA of this network's layout ({Options}): {e.Message}", inner: e);
            }
            foreach (var m in Loras) m.RefreshScale();
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    /// <summary>Detaches from the model, then frees the LoRA weights.</summary>
    public new void Dispose()
    {
        if (IsDisposed) return;
        Detach();
        base.Dispose();
    }
}
