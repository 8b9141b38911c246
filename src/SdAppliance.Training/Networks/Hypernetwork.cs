using System.Numerics;
using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Formats.Pickle;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.Loading;
using SdAppliance.Models.Unet;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using SdAppliance.Torch.Serialization;

namespace SdAppliance.Training.Networks;

/// <summary>
/// A1111's hypernetwork settings (its "Create hypernetwork" form). <paramref name="LayerStructure"/>
/// multiplies the context width per layer and must start and end with 1 ("1, 2, 1").
/// <paramref name="DropoutStructure"/> null derives it as A1111 does from <paramref name="UseDropout"/>
/// and <paramref name="LastLayerDropout"/> (0.3 after every hidden layer). <paramref name="EnableSizes"/>
/// are the context widths that get a (k, v) pair; null takes every attention context width of the model
/// (for SD 1.x A1111's default 768, 320, 640, 1280).
/// </summary>
public sealed record HypernetworkOptions(double[] LayerStructure, string ActivationFunc = "linear",
    bool IsLayerNorm = false, bool UseDropout = false, string WeightInitialization = "Normal", bool ActivateOutput = false,
    double[]? DropoutStructure = null, bool LastLayerDropout = true, int[]? EnableSizes = null)
{
    public static readonly string[] WeightInitializations = ["Normal", "XavierUniform", "XavierNormal", "KaimingUniform", "KaimingNormal"];

    /// <summary>Throws, naming the field, when A1111 would refuse the settings.</summary>
    public void Validate()
    {
        if (LayerStructure is null || LayerStructure.Length < 2)
            throw new ArgumentException("layer_structure needs at least two entries, e.g. 1, 2, 1", nameof(LayerStructure));
        if (LayerStructure[0] != 1 || LayerStructure[^1] != 1)
            throw new ArgumentException($"layer_structure must start and end with 1 (got {string.Join(", ", LayerStructure)})", nameof(LayerStructure));
        if (LayerStructure.Any(s => !(s > 0) || !double.IsFinite(s)))
            throw new ArgumentException("layer_structure entries must be positive numbers", nameof(LayerStructure));
        _ = new HypernetworkActivation(ActivationFunc == "linear" ? "relu" : ActivationFunc);
        if (!WeightInitializations.Contains(WeightInitialization))
            throw new ArgumentException($"weight_initialization '{WeightInitialization}' is not one of {string.Join(", ", WeightInitializations)}", nameof(WeightInitialization));
        var dropout = ResolvedDropoutStructure();
        if (dropout.Length != LayerStructure.Length)
            throw new ArgumentException($"dropout_structure has {dropout.Length} entries for {LayerStructure.Length} layers", nameof(DropoutStructure));
        if (dropout.Any(p => p is < 0 or >= 1 || double.IsNaN(p)) || dropout[^1] != 0)
            throw new ArgumentException("dropout_structure entries must be in [0, 1) and the last must be 0", nameof(DropoutStructure));
        if (EnableSizes is not null && EnableSizes.Any(s => s <= 0))
            throw new ArgumentException("enable_sizes must be positive context widths", nameof(EnableSizes));
    }

    /// <summary>A1111's <c>parse_dropout_structure</c> when none is given.</summary>
    public double[] ResolvedDropoutStructure()
    {
        if (DropoutStructure is not null) return DropoutStructure;
        if (!UseDropout) return new double[LayerStructure.Length];
        var values = new List<double> { 0 };
        values.AddRange(Enumerable.Repeat(0.3, Math.Max(LayerStructure.Length - 3, 0)));
        values.Add(LastLayerDropout ? 0.3 : 0);
        values.Add(0);
        return [.. values];
    }
}

/// <summary>
/// An A1111 hypernetwork: per context width a pair of <see cref="HypernetworkModule"/> MLPs (k, v)
/// applied to the context before <c>to_k</c> and <c>to_v</c> of every UNet attention whose context has
/// that width: <c>context + mlp(context) · multiplier</c>. As in A1111's attention hijack this covers
/// cross-attention (attn2, the text context) and self-attention (attn1, whose context is the image
/// tokens), which is why A1111 offers the widths 320, 640 and 1280 besides 768. Attached through the
/// adapter slots of to_k/to_v, so the model is untouched. Saved as A1111's <c>.pt</c> (FORMATS §4.6).
/// A new network is in training mode; a loaded one in eval mode (multiplier applies, no dropout).
/// </summary>
public sealed class Hypernetwork : Module, IDisposable
{
    private readonly UNet2DConditionModel unet;
    private readonly SortedDictionary<long, (HypernetworkModule K, HypernetworkModule V)> layers = [];
    private readonly List<(Linear Layer, HypernetworkAdapter Adapter)> attached = [];
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
        var plan = new List<(Linear, HypernetworkAdapter)>();
        foreach (var (path, module) in unet.NamedModules())
        {
            if (module is not Attention) continue;
            if (module.GetSubmodule("to_k") is not Linear toK || module.GetSubmodule("to_v") is not Linear toV) continue;
            if (!layers.TryGetValue(toK.InFeatures, out var pair)) continue;
            foreach (var (layer, mlp) in new[] { (toK, pair.K), (toV, pair.V) })
            {
                if (layer.Adapter is not null)
                    throw new InvalidOperationException($"{path} already has an adapter on {(layer == toK ? "to_k" : "to_v")} ({layer.Adapter.GetType().Name}); detach it first");
                plan.Add((layer, new HypernetworkAdapter(mlp)));
            }
        }
        foreach (var (layer, adapter) in plan) layer.Adapter = adapter;
        attached.AddRange(plan);
    }

    public void Detach()
    {
        foreach (var (layer, adapter) in attached)
            if (ReferenceEquals(layer.Adapter, adapter)) layer.Adapter = null;
        attached.Clear();
    }

    /// <summary>
    /// Writes A1111's <c>.pt</c> atomically: <c>{size: (k.state_dict(), v.state_dict()), "step", "name",
    /// "layer_structure", "activation_func", "is_layer_norm", "weight_initialization", "sd_checkpoint",
    /// "sd_checkpoint_name", "activate_output", "use_dropout", "dropout_structure", "last_layer_dropout",
    /// "optional_info"}</c>, float32 weights.
    /// </summary>
    public void SavePt(string path, int step, string sdCheckpointHash, string sdCheckpointName)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var root = new PickleDict();
        foreach (var size in Sizes)
        {
            var (k, v) = layers[size];
            root.Set(size, new PickleTuple(ModuleState(k), ModuleState(v)));
        }
        var dropout = Options.ResolvedDropoutStructure();
        root.Set("step", (long)step);
        root.Set("name", Name);
        root.Set("layer_structure", Options.LayerStructure.Select(x => (object?)x).ToList());
        root.Set("activation_func", Options.ActivationFunc);
        root.Set("is_layer_norm", Options.IsLayerNorm);
        root.Set("weight_initialization", Options.WeightInitialization);
        root.Set("sd_checkpoint", sdCheckpointHash);
        root.Set("sd_checkpoint_name", sdCheckpointName);
        root.Set("activate_output", Options.ActivateOutput);
        root.Set("use_dropout", Options.UseDropout);
        root.Set("dropout_structure", dropout.Select(x => (object?)x).ToList());
        root.Set("last_layer_dropout", dropout[^2] != 0);
        root.Set("optional_info", null);
        TorchSaveWriter.Write(path, root);
    }

    // The module's state dict as an OrderedDict of float32 tensors keyed linear.N.weight/bias.
    private static PickleDict ModuleState(HypernetworkModule module)
    {
        var dict = new PickleDict(isOrdered: true);
        using var state = module.StateDict();
        foreach (var (key, tensor) in state)
        {
            using var cpu = tensor.To(Device.Cpu, DType.Float32);
            dict.Set(key, new SafetensorsTensor(key, SafetensorsDType.F32, tensor.Shape, cpu.ToBytes()));
        }
        return dict;
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
        if (!File.Exists(path)) throw new FileNotFoundException($"hypernetwork file '{path}' does not exist", path);
        using var checkpoint = TorchCheckpoint.Open(path);
        if (checkpoint.Root is not PickleDict root)
            throw new InvalidDataException($"'{path}' is not an A1111 hypernetwork: its top level is not a dict");

        // A1111's load(): these are its defaults for keys older files lack.
        var layerStructure = root.TryGetValue("layer_structure", out var ls) && ls is not null ? Numbers(ls, path, "layer_structure") : [1, 2, 1];
        var dropoutStructure = root.TryGetValue("dropout_structure", out var ds) && ds is not null ? Numbers(ds, path, "dropout_structure") : null;
        var useDropout = dropoutStructure is not null && dropoutStructure.Any(p => p != 0) || Bool(root, "use_dropout", false);
        var lastLayerDropout = Bool(root, "last_layer_dropout", false);
        var options = new HypernetworkOptions(layerStructure,
            ActivationFunc: root.TryGetValue("activation_func", out var af) && af is string a ? a : "linear",
            IsLayerNorm: Bool(root, "is_layer_norm", false),
            UseDropout: useDropout,
            WeightInitialization: root.TryGetValue("weight_initialization", out var wi) && wi is string w ? w : "Normal",
            ActivateOutput: Bool(root, "activate_output", true),
            DropoutStructure: dropoutStructure,
            LastLayerDropout: lastLayerDropout);
        try
        {
            options.Validate();
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"'{path}' is not a hypernetwork we can build: {e.Message}", e);
        }

        var name = root.TryGetValue("name", out var n) && n is string s ? s : Path.GetFileNameWithoutExtension(path);
        var sizes = new List<long>();
        var states = new List<(PickleDict K, PickleDict V)>();
        foreach (var (key, value) in root)
        {
            if (key is not long size) continue;
            if (value is not PickleTuple { Count: 2 } pair || pair[0] is not PickleDict k || pair[1] is not PickleDict v)
                throw new InvalidDataException($"'{path}': the layers of size {size} are not a (k, v) pair of state dicts");
            sizes.Add(size);
            states.Add((k, v));
        }
        if (sizes.Count == 0) throw new InvalidDataException($"'{path}' has no hypernetwork layers (no integer keys)");

        var network = new Hypernetwork(unet, options, name) { Step = root.TryGetValue("step", out var st) && st is long step ? (int)step : 0 };
        try
        {
            using (Init.Skip())
                network.Build(sizes, generator: null);
            for (var i = 0; i < sizes.Count; i++)
            {
                var (k, v) = network.layers[sizes[i]];
                Load(k, states[i].K, path, sizes[i]);
                Load(v, states[i].V, path, sizes[i]);
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

    // Legacy files name the two Linears linear1/linear2 (A1111's fix_old_state_dict).
    private static readonly Dictionary<string, string> LegacyKeys = new(StringComparer.Ordinal)
    {
        ["linear1.bias"] = "linear.0.bias", ["linear1.weight"] = "linear.0.weight",
        ["linear2.bias"] = "linear.1.bias", ["linear2.weight"] = "linear.1.weight",
    };

    private static void Load(HypernetworkModule module, PickleDict state, string path, long size)
    {
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var (key, value) in state)
            {
                if (key is not string name || value is not TorchTensor t)
                    throw new InvalidDataException($"'{path}': the layers of size {size} hold a non-tensor entry {key}");
                name = LegacyKeys.GetValueOrDefault(name, name);
                tensors[name] = torch.FromBytes(t.ReadBytes(), t.Shape.ToArray(), Safetensors.ToTorch(t.DType, name, path));
            }
            module.LoadStateDict(tensors, strict: true);
        }
        catch (StateDictException e)
        {
            throw new InvalidDataException($"'{path}': the layers of size {size} do not fit the file's own layer structure: {e.Message}", e);
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    private static double[] Numbers(object value, string path, string key)
    {
        if (value is not IEnumerable<object?> items)
            throw new InvalidDataException($"'{path}': {key} is not a list of numbers");
        return [.. items.Select(x => x switch
        {
            long l => l,
            double d => d,
            bool b => b ? 1 : 0,
            BigInteger big => (double)big,
            _ => throw new InvalidDataException($"'{path}': {key} holds {x ?? "None"}, not a number"),
        })];
    }

    private static bool Bool(PickleDict root, string key, bool fallback) =>
        root.TryGetValue(key, out var value) ? value switch
        {
            bool b => b,
            long l => l != 0,
            null => fallback,
            _ => fallback,
        } : fallback;

    public new void Dispose()
    {
        if (IsDisposed) return;
        Detach();
        base.Dispose();
    }

    /// <summary>The context through one MLP, in float32 as A1111 runs it, before the layer itself.</summary>
    private sealed class HypernetworkAdapter(HypernetworkModule mlp) : ILayerAdapter
    {
        public Tensor Forward(Tensor input, Func<Tensor, Tensor> layer)
        {
            var dtype = mlp.GetParameter("linear.0.weight")!.DType;
            using var x = input.DType == dtype ? input.Alias() : input.To(dtype);
            using var transformed = mlp.Forward(x);
            using var back = transformed.DType == input.DType ? transformed.Alias() : transformed.To(input.DType);
            return layer(back);
        }
    }
}
