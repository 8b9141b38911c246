using System.Numerics;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Formats.Pickle;

namespace SdAppliance.Formats.Adapters;

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

    /// <summary>The parameterless activations A1111 accepts by name (its dict plus torch.nn's activation classes, lower-cased).</summary>
    public static readonly string[] Activations =
    [
        "linear", "relu", "leakyrelu", "elu", "swish", "tanh", "sigmoid", "gelu", "silu", "mish", "softplus", "softsign",
        "relu6", "selu", "celu", "hardswish", "hardsigmoid", "hardtanh", "tanhshrink", "logsigmoid",
    ];

    /// <summary>Throws, naming the field, when A1111 would refuse the settings.</summary>
    public void Validate()
    {
        if (LayerStructure is null || LayerStructure.Length < 2)
            throw new ArgumentException("layer_structure needs at least two entries, e.g. 1, 2, 1", nameof(LayerStructure));
        if (LayerStructure[0] != 1 || LayerStructure[^1] != 1)
            throw new ArgumentException($"layer_structure must start and end with 1 (got {string.Join(", ", LayerStructure)})", nameof(LayerStructure));
        if (LayerStructure.Any(s => !(s > 0) || !double.IsFinite(s)))
            throw new ArgumentException("layer_structure entries must be positive numbers", nameof(LayerStructure));
        if (!Activations.Contains(ActivationFunc))
            throw new ArgumentException($"hypernetwork activation_func '{ActivationFunc}' is not supported: use one of {string.Join(", ", Activations)}", nameof(ActivationFunc));
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

/// <summary>The (k, v) MLPs of one context width in a hypernetwork file: each a state dict keyed <c>linear.N.weight</c>/<c>bias</c>.</summary>
public sealed record HypernetworkLayers<TTensor>(long Size, IReadOnlyDictionary<string, TTensor> K, IReadOnlyDictionary<string, TTensor> V);

/// <summary>
/// A1111's hypernetwork <c>.pt</c> (FORMATS §4.6): <c>{size: (k.state_dict(), v.state_dict()), "step", "name",
/// "layer_structure", "activation_func", "is_layer_norm", "weight_initialization", "sd_checkpoint",
/// "sd_checkpoint_name", "activate_output", "use_dropout", "dropout_structure", "last_layer_dropout",
/// "optional_info"}</c>, read through the restricted unpickler and written as torch.save writes it.
/// </summary>
/// <param name="SdCheckpoint">The base model's A1111 short hash, or null.</param>
/// <param name="SdCheckpointName">The base model's name, or null.</param>
public sealed record HypernetworkFile(string Name, int Step, HypernetworkOptions Options, string? SdCheckpoint, string? SdCheckpointName)
{
    // Legacy files name the two Linears linear1/linear2 (A1111's fix_old_state_dict).
    private static readonly Dictionary<string, string> LegacyKeys = new(StringComparer.Ordinal)
    {
        ["linear1.bias"] = "linear.0.bias", ["linear1.weight"] = "linear.0.weight",
        ["linear2.bias"] = "linear.1.bias", ["linear2.weight"] = "linear.1.weight",
    };

    /// <summary>Writes the file atomically; the tensors are float32 state dicts.</summary>
    public void Write(string path, IEnumerable<HypernetworkLayers<SafetensorsTensor>> layers)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var root = new PickleDict();
        foreach (var layer in layers)
            root.Set(layer.Size, new PickleTuple(State(layer.K), State(layer.V)));
        var dropout = Options.ResolvedDropoutStructure();
        root.Set("step", (long)Step);
        root.Set("name", Name);
        root.Set("layer_structure", Options.LayerStructure.Select(x => (object?)x).ToList());
        root.Set("activation_func", Options.ActivationFunc);
        root.Set("is_layer_norm", Options.IsLayerNorm);
        root.Set("weight_initialization", Options.WeightInitialization);
        root.Set("sd_checkpoint", SdCheckpoint);
        root.Set("sd_checkpoint_name", SdCheckpointName);
        root.Set("activate_output", Options.ActivateOutput);
        root.Set("use_dropout", Options.UseDropout);
        root.Set("dropout_structure", dropout.Select(x => (object?)x).ToList());
        root.Set("last_layer_dropout", dropout[^2] != 0);
        root.Set("optional_info", null);
        TorchSaveWriter.Write(path, root);
    }

    private static PickleDict State(IReadOnlyDictionary<string, SafetensorsTensor> tensors)
    {
        var dict = new PickleDict(isOrdered: true);
        foreach (var (key, tensor) in tensors) dict.Set(key, tensor);
        return dict;
    }

    /// <summary>
    /// Reads a hypernetwork <c>.pt</c>: its settings (with A1111's defaults for keys older files lack) and each
    /// width's layers, whose tensors are read from <paramref name="checkpoint"/> while it stays open.
    /// </summary>
    /// <exception cref="InvalidDataException">The file is not a hypernetwork A1111 could build.</exception>
    public static (HypernetworkFile File, List<HypernetworkLayers<TorchTensor>> Layers) Read(TorchCheckpoint checkpoint)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        var path = checkpoint.Path;
        if (checkpoint.Root is not PickleDict root)
            throw new UserInputException(path, $"is not an A1111 hypernetwork: its top level is not a dict");

        // A1111's load(): these are its defaults for keys older files lack.
        var layerStructure = root.TryGetValue("layer_structure", out var ls) && ls is not null ? Numbers(ls, path, "layer_structure") : [1, 2, 1];
        var dropoutStructure = root.TryGetValue("dropout_structure", out var ds) && ds is not null ? Numbers(ds, path, "dropout_structure") : null;
        var useDropout = dropoutStructure is not null && dropoutStructure.Any(p => p != 0) || Bool(root, "use_dropout", false);
        var options = new HypernetworkOptions(layerStructure,
            ActivationFunc: root.TryGetValue("activation_func", out var af) && af is string a ? a : "linear",
            IsLayerNorm: Bool(root, "is_layer_norm", false),
            UseDropout: useDropout,
            WeightInitialization: root.TryGetValue("weight_initialization", out var wi) && wi is string w ? w : "Normal",
            ActivateOutput: Bool(root, "activate_output", true),
            DropoutStructure: dropoutStructure,
            LastLayerDropout: Bool(root, "last_layer_dropout", false));
        try
        {
            options.Validate();
        }
        catch (ArgumentException e)
        {
            throw new UserInputException(path, $"is not a hypernetwork we can build: {e.Message}", inner: e);
        }

        var layers = new List<HypernetworkLayers<TorchTensor>>();
        foreach (var (key, value) in root)
        {
            if (key is not long size) continue;
            if (value is not PickleTuple { Count: 2 } pair || pair[0] is not PickleDict k || pair[1] is not PickleDict v)
                throw new UserInputException(path, $"the layers of size {size} are not a (k, v) pair of state dicts");
            layers.Add(new HypernetworkLayers<TorchTensor>(size, Tensors(k, path, size), Tensors(v, path, size)));
        }
        if (layers.Count == 0) throw new UserInputException(path, $"has no hypernetwork layers (no integer keys)");

        var file = new HypernetworkFile(
            root.TryGetValue("name", out var n) && n is string s ? s : Path.GetFileNameWithoutExtension(path),
            root.TryGetValue("step", out var st) && st is long step ? (int)step : 0,
            options,
            root.TryGetValue("sd_checkpoint", out var sc) ? sc as string : null,
            root.TryGetValue("sd_checkpoint_name", out var sn) ? sn as string : null);
        return (file, layers);
    }

    private static Dictionary<string, TorchTensor> Tensors(PickleDict state, string path, long size)
    {
        var tensors = new Dictionary<string, TorchTensor>(StringComparer.Ordinal);
        foreach (var (key, value) in state)
        {
            if (key is not string name || value is not TorchTensor t)
                throw new UserInputException(path, $"the layers of size {size} hold a non-tensor entry {key}");
            tensors[LegacyKeys.GetValueOrDefault(name, name)] = t;
        }
        return tensors;
    }

    private static double[] Numbers(object value, string path, string key)
    {
        if (value is not IEnumerable<object?> items)
            throw new UserInputException(path, $"{key} is not a list of numbers");
        return [.. items.Select(x => x switch
        {
            long l => l,
            double d => d,
            bool b => b ? 1 : 0,
            BigInteger big => (double)big,
            _ => throw new UserInputException(path, $"{key} holds {x ?? "None"}, not a number"),
        })];
    }

    private static bool Bool(PickleDict root, string key, bool fallback) =>
        root.TryGetValue(key, out var value) ? value switch
        {
            bool b => b,
            long l => l != 0,
            _ => fallback,
        } : fallback;
}
