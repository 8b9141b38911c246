using SdAppliance.Formats;
using SdAppliance.Formats.Adapters;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.Loading;
using SdAppliance.Models.Unet;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using SdAppliance.Torch.Serialization;

namespace SdAppliance.Models.Adapters;

/// <summary>
/// An A1111 hypernetwork: per context width a pair of <see cref="HypernetworkModule"/> MLPs (k, v)
/// applied to the context before <c>to_k</c> and <c>to_v</c> of every UNet attention whose context has
/// that width: <c>context + mlp(context) · multiplier</c>. As in A1111's attention hijack this covers
/// cross-attention (attn2, the text context) and self-attention (attn1, whose context is the image
/// tokens), which is why A1111 offers the widths 320, 640 and 1280 besides 768. Attached through the
/// wrapper slots of to_k/to_v, so the model is untouched; several networks attached to one model chain in
/// the order they were attached, as A1111's <c>apply_hypernetworks</c> runs its list (each one's k MLP on the
/// previous one's k context). Saved as A1111's <c>.pt</c> (<see cref="HypernetworkFile"/>, FORMATS §4.6).
/// A new network is in training mode; a loaded one in eval mode (multiplier applies, no dropout).
/// </summary>
public sealed class Hypernetwork : Module, IDisposable
{
    private readonly UNet2DConditionModel unet;
    private readonly SortedDictionary<long, (HypernetworkModule K, HypernetworkModule V)> layers = [];
    private readonly List<(Linear Layer, HypernetworkWrapper Wrapper)> attached = [];
    private double multiplier = 1;

    private Hypernetwork(UNet2DConditionModel unet, HypernetworkOptions options, string name)
    {
        this.unet = unet;
        Options = options;
        Name = name;
    }

    public HypernetworkOptions Options { get; }

    /// <summary>The name saved in the file (A1111 shows the file name).</summary>
    public string Name { get; }

    /// <summary>The step saved in the loaded file (0 for a new network).</summary>
    public int Step { get; private set; }

    /// <summary>The context widths this network has layers for, in file order.</summary>
    public IReadOnlyList<long> Sizes { get; private set; } = [];

    public (HypernetworkModule K, HypernetworkModule V) Layers(long size) => layers[size];

    /// <summary>Every weight and bias of every MLP (A1111's <c>weights()</c>).</summary>
    public IReadOnlyList<Tensor> TrainableParameters => [.. Parameters()];

    /// <summary>Strength at inference (A1111's <c>set_multiplier</c>); training mode always uses 1.</summary>
    public double Multiplier
    {
        get => multiplier;
        set
        {
            multiplier = value;
            foreach (var (k, v) in layers.Values)
            {
                k.Multiplier = value;
                v.Multiplier = value;
            }
        }
    }

    public bool IsAttached => attached.Count > 0;

    /// <summary>The context widths of the UNet's attentions: cross-attention first, then the self-attention widths ascending.</summary>
    public static List<long> ContextWidths(UNet2DConditionModel unet)
    {
        ArgumentNullException.ThrowIfNull(unet);
        var cross = new SortedSet<long>();
        var self = new SortedSet<long>();
        foreach (var (path, module) in unet.NamedModules())
            if (module is Attention && module.GetSubmodule("to_k") is Linear toK)
                (path.EndsWith("attn2", StringComparison.Ordinal) ? cross : self).Add(toK.InFeatures);
        return [.. cross, .. self.Where(w => !cross.Contains(w))];
    }

    /// <summary>A new hypernetwork for <paramref name="model"/> with A1111's initialisation, attached.</summary>
    public static Hypernetwork Create(StableDiffusionModel model, HypernetworkOptions options, string name, Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        return Create(model.Unet, options, name, generator);
    }

    public static Hypernetwork Create(UNet2DConditionModel unet, HypernetworkOptions options, string name, Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(unet);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        options.Validate();
        var sizes = options.EnableSizes?.Select(s => (long)s).Distinct().ToList() ?? ContextWidths(unet);
        var network = new Hypernetwork(unet, options, name);
        try
        {
            network.Build(sizes, generator);
            network.Attach();
            return network;
        }
        catch
        {
            network.Dispose();
            throw;
        }
    }

    private void Build(IReadOnlyList<long> sizes, Generator? generator)
    {
        var device = FirstDevice(unet);
        var dropout = Options.ResolvedDropoutStructure();
        foreach (var size in sizes)
        {
            // A1111 builds k then v for each size, each drawing its Linear defaults and then its init.
            var k = new HypernetworkModule(size, Options, dropout, device, generator);
            var v = new HypernetworkModule(size, Options, dropout, device, generator);
            layers[size] = (k, v);
            RegisterModule(size.ToString(System.Globalization.CultureInfo.InvariantCulture), new ModuleList<HypernetworkModule>(k, v));
        }
        Sizes = [.. sizes];
    }

    private static Device FirstDevice(Module module) => module.Parameters().FirstOrDefault()?.Device ?? Device.Cpu;

    /// <summary>Wraps to_k and to_v of every attention whose context width has layers.</summary>
    public void Attach()
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        if (IsAttached) return;
        var plan = new List<(Linear, HypernetworkWrapper)>();
        foreach (var (path, module) in unet.NamedModules())
        {
            if (module is not Attention) continue;
            if (module.GetSubmodule("to_k") is not Linear toK || module.GetSubmodule("to_v") is not Linear toV) continue;
            if (!layers.TryGetValue(toK.InFeatures, out var pair)) continue;
            foreach (var (layer, mlp) in new[] { (toK, pair.K), (toV, pair.V) })
            {
                if (layer.Wrapper is not (null or HypernetworkWrapper))
                    throw new InvalidOperationException($"{path} already has a wrapper on {(layer == toK ? "to_k" : "to_v")} ({layer.Wrapper.GetType().Name}); detach it first");
                plan.Add((layer, new HypernetworkWrapper(mlp, layer.Wrapper)));
            }
        }
        foreach (var (layer, wrapper) in plan) layer.Wrapper = wrapper;
        attached.AddRange(plan);
    }

    /// <summary>Unwraps to_k and to_v (networks attached after this one must be detached first).</summary>
    public void Detach()
    {
        foreach (var (layer, wrapper) in attached)
            if (ReferenceEquals(layer.Wrapper, wrapper)) layer.Wrapper = wrapper.Previous;
        attached.Clear();
    }

    /// <summary>How many attentions' to_k/to_v this network wraps (0 when none has a context width it has layers for).</summary>
    public int AttachedLayerCount => attached.Count / 2;

    /// <summary>The widths this network has layers for that no attention of the model has.</summary>
    public IReadOnlyList<long> UnusedSizes()
    {
        var widths = ContextWidths(unet);
        return [.. Sizes.Where(s => !widths.Contains(s))];
    }

    /// <summary>
    /// Writes A1111's <c>.pt</c> atomically (<see cref="HypernetworkFile"/>), float32 weights. As A1111, the
    /// network is named after its file; <paramref name="sdCheckpointHash"/> is the base model's A1111 short hash.
    /// </summary>
    public void SavePt(string path, int step, string? sdCheckpointHash, string? sdCheckpointName)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var file = new HypernetworkFile(Path.GetFileNameWithoutExtension(path), step, Options, sdCheckpointHash, sdCheckpointName);
        file.Write(path, Sizes.Select(size => new HypernetworkLayers<SafetensorsTensor>(size, ModuleState(layers[size].K), ModuleState(layers[size].V))));
    }

    // The module's state dict as float32 tensors keyed linear.N.weight/bias, in module order.
    private static Dictionary<string, SafetensorsTensor> ModuleState(HypernetworkModule module)
    {
        var result = new Dictionary<string, SafetensorsTensor>(StringComparer.Ordinal);
        using var state = module.StateDict();
        foreach (var (key, tensor) in state)
        {
            using var cpu = tensor.To(Device.Cpu, DType.Float32);
            result[key] = new SafetensorsTensor(key, SafetensorsDType.F32, tensor.Shape, cpu.ToBytes());
        }
        return result;
    }

    /// <summary>Reads an A1111 hypernetwork <c>.pt</c> through the restricted unpickler and attaches it to <paramref name="model"/>.</summary>
    public static Hypernetwork LoadPt(string path, StableDiffusionModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return LoadPt(path, model.Unet);
    }

    public static Hypernetwork LoadPt(string path, UNet2DConditionModel unet)
    {
        ArgumentNullException.ThrowIfNull(unet);
        if (!File.Exists(path)) throw new UserInputException(path, "the hypernetwork file does not exist");
        using var checkpoint = TorchCheckpoint.Open(path);
        var (file, stored) = HypernetworkFile.Read(checkpoint);
        var network = new Hypernetwork(unet, file.Options, file.Name) { Step = file.Step };
        try
        {
            using (Init.Skip())
                network.Build([.. stored.Select(l => l.Size)], generator: null);
            foreach (var layer in stored)
            {
                var (k, v) = network.layers[layer.Size];
                Load(k, layer.K, path, layer.Size);
                Load(v, layer.V, path, layer.Size);
            }
            network.Eval();
            network.Attach();
            return network;
        }
        catch
        {
            network.Dispose();
            throw;
        }
    }

    private static void Load(HypernetworkModule module, IReadOnlyDictionary<string, TorchTensor> state, string path, long size)
    {
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var (name, t) in state)
                tensors[name] = torch.FromBytes(t.ReadBytes(), t.Shape.ToArray(), TensorFiles.ToTorch(t.DType, name, path));
            module.LoadStateDict(tensors, strict: true);
        }
        catch (StateDictException e)
        {
            throw new UserInputException(path, $"the layers of size {size} do not fit the file's own layer structure: {e.Message}", inner: e);
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    public new void Dispose()
    {
        if (IsDisposed) return;
        Detach();
        base.Dispose();
    }

    /// <summary>
    /// The context through one MLP, in float32 as A1111 runs it (<c>cond_cast_float</c>), before the layer itself;
    /// after the <paramref name="Previous"/> network's MLP when several are attached.
    /// </summary>
    private sealed class HypernetworkWrapper(HypernetworkModule mlp, ILayerWrapper? previous) : ILayerWrapper
    {
        public ILayerWrapper? Previous => previous;

        public Tensor Forward(Tensor input, Func<Tensor, Tensor> layer) =>
            previous is null ? Apply(input, layer) : previous.Forward(input, x => Apply(x, layer));

        private Tensor Apply(Tensor input, Func<Tensor, Tensor> layer)
        {
            var dtype = mlp.GetParameter("linear.0.weight")!.DType;
            using var x = input.DType == dtype ? input.Alias() : input.To(dtype);
            using var transformed = mlp.Forward(x);
            using var back = transformed.DType == input.DType ? transformed.Alias() : transformed.To(input.DType);
            return layer(back);
        }
    }
}
