using SdAppliance.Formats;
using SdAppliance.Formats.Adapters;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;
using SdAppliance.Torch.Serialization;

namespace SdAppliance.Models.Adapters;

/// <summary>
/// One patched module of any algorithm (<see cref="LoraKeys"/>): its tensors by part name (<c>lora_down</c>,
/// <c>hada_w1_a</c>, <c>lokr_w2</c>…), alpha, and DoRA's magnitude vector. <see cref="Name"/> is the module path with
/// dots turned into underscores (kohya's spelling), which every format can be brought to and which our modules'
/// paths are compared in. The merge is <c>W' = W + multiplier · scale · Δ</c>, Δ being <see cref="LoraDeltas"/>' formula
/// of the algorithm (with DoRA: <c>W + multiplier · (DoRA(W + scale · Δ) − W)</c>).
/// </summary>
public sealed record LoraModule(LoraTarget Target, string Name, LoraAlgorithm Algorithm, IReadOnlyDictionary<string, Tensor> Weights,
    double? Alpha, Tensor? DoraScale = null)
{
    /// <summary>A plain LoRA module (down, up), as the layouts without LyCORIS parts give.</summary>
    public LoraModule(LoraTarget target, string name, Tensor down, Tensor up, double? alpha)
        : this(target, name, LoraAlgorithm.Lora, new Dictionary<string, Tensor> { [LoraKeys.DownPart] = down, [LoraKeys.UpPart] = up }, alpha) { }

    public Tensor? Down => Weights.GetValueOrDefault(LoraKeys.DownPart);

    public Tensor? Up => Weights.GetValueOrDefault(LoraKeys.UpPart);

    private Tensor? Part(string name) => Weights.GetValueOrDefault(name);

    /// <summary>
    /// The rank alpha is divided by, as A1111 and ComfyUI take it: lora_down's rows; LoHa's hada_w1_b rows; LoKr's
    /// lokr_w2_b rows (else lokr_w1_b's), and none for a LoKr of two whole factors, which is never scaled.
    /// </summary>
    public long? Rank => Algorithm switch
    {
        LoraAlgorithm.Lora => Down!.Shape[0],
        LoraAlgorithm.Loha => Part(LoraKeys.HadaW1B)!.Shape[0],
        _ => Part(LoraKeys.LokrW2B)?.Shape[0] ?? Part(LoraKeys.LokrW1B)?.Shape[0],
    };

    /// <summary>alpha / rank; 1 without an alpha, with alpha 0 (kohya's "alpha = rank"), or without a rank.</summary>
    public double Scale => Rank is { } rank && Alpha is { } a && a != 0 ? a / rank : 1.0;

    /// <summary>
    /// The shape of the delta the factors make, from their shapes alone ([rows, columns], or the convolution's
    /// [out, in, kh, kw] for a Tucker or whole 4-D factor), or null when the factors do not chain (a rank that
    /// differs between two of them).
    /// </summary>
    public long[]? ProducedShape()
    {
        static long Columns(Tensor t) => t.Shape.Skip(1).Aggregate(1L, (a, d) => a * d);
        switch (Algorithm)
        {
            case LoraAlgorithm.Lora:
                return Columns(Up!) == Down!.Shape[0] ? [Up!.Shape[0], Columns(Down!)] : null;
            case LoraAlgorithm.Loha:
            {
                var first = HadaShape(Part(LoraKeys.HadaW1A)!, Part(LoraKeys.HadaW1B)!, Part(LoraKeys.HadaT1));
                var second = HadaShape(Part(LoraKeys.HadaW2A)!, Part(LoraKeys.HadaW2B)!, Part(LoraKeys.HadaT2));
                return first is not null && second is not null && first.SequenceEqual(second) ? first : null;
            }
            default:
            {
                var w1 = Part(LoraKeys.LokrW1) is { } whole1 ? whole1.Shape
                    : Part(LoraKeys.LokrW1A)!.Shape[1] == Part(LoraKeys.LokrW1B)!.Shape[0] ? [Part(LoraKeys.LokrW1A)!.Shape[0], Part(LoraKeys.LokrW1B)!.Shape[1]] : null;
                long[]? w2 = Part(LoraKeys.LokrW2) is { } whole2 ? whole2.Shape
                    : Part(LoraKeys.LokrT2) is { } t2 ? TuckerShape(t2, Part(LoraKeys.LokrW2A)!, Part(LoraKeys.LokrW2B)!)
                    : Part(LoraKeys.LokrW2A)!.Shape[1] == Part(LoraKeys.LokrW2B)!.Shape[0] ? [Part(LoraKeys.LokrW2A)!.Shape[0], Columns(Part(LoraKeys.LokrW2B)!)] : null;
                if (w1 is null || w2 is null || w1.Length != 2 || w2.Length is not (2 or 4)) return null;
                // kron of [a, c] with [b, d] is [a·b, c·d]; with a whole 4-D [b, d, kh, kw], w1 gains two unit dimensions.
                return w2.Length == 4 ? [w1[0] * w2[0], w1[1] * w2[1], w2[2], w2[3]] : [w1[0] * w2[0], w1[1] * w2[1]];
            }
        }
    }

    private static long[]? HadaShape(Tensor a, Tensor b, Tensor? t)
    {
        if (t is not null) return TuckerShape(t, a, b);
        return a.Dim == 2 && a.Shape[1] == b.Shape[0] ? [a.Shape[0], b.Shape.Skip(1).Aggregate(1L, (x, d) => x * d)] : null;
    }

    // Tucker core [rank, rank, kh, kw] with wa [rank, out] and wb [rank, in] → [out, in, kh, kw].
    private static long[]? TuckerShape(Tensor t, Tensor wa, Tensor wb) =>
        t.Dim == 4 && wa.Dim == 2 && wb.Dim == 2 && t.Shape[0] == wa.Shape[0] && t.Shape[1] == wb.Shape[0] ? [wa.Shape[1], wb.Shape[1], t.Shape[2], t.Shape[3]] : null;

    /// <summary>The unscaled delta in <paramref name="shape"/>, float32 on <paramref name="device"/> (a new tensor the caller owns).</summary>
    public Tensor Delta(long[] shape, Device device)
    {
        using var scope = torch.NewDisposeScope();
        Tensor F(string part) => Part(part)!.To(device, DType.Float32);
        Tensor? Maybe(string part) => Part(part) is null ? null : F(part);
        var delta = Algorithm switch
        {
            LoraAlgorithm.Lora => LoraDeltas.Lora(F(LoraKeys.UpPart), F(LoraKeys.DownPart), shape),
            LoraAlgorithm.Loha => LoraDeltas.Loha(F(LoraKeys.HadaW1A), F(LoraKeys.HadaW1B), F(LoraKeys.HadaW2A), F(LoraKeys.HadaW2B),
                Maybe(LoraKeys.HadaT1), Maybe(LoraKeys.HadaT2), shape),
            _ => LoraDeltas.Lokr(
                Maybe(LoraKeys.LokrW1) ?? LoraDeltas.Product(F(LoraKeys.LokrW1A), F(LoraKeys.LokrW1B)),
                Maybe(LoraKeys.LokrW2) ?? (Part(LoraKeys.LokrT2) is not null
                    ? LoraDeltas.Tucker(F(LoraKeys.LokrT2), F(LoraKeys.LokrW2A), F(LoraKeys.LokrW2B))
                    : LoraDeltas.Product(F(LoraKeys.LokrW2A), F(LoraKeys.LokrW2B))),
                shape),
        };
        return delta.MoveToOuterScope();
    }
}

/// <summary>
/// A LoRA file in any of the layouts users bring (<see cref="LoraKeys"/>: kohya, diffusers, PEFT, LyCORIS LoHa/LoKr/DoRA), its
/// modules' weights as tensors over the file's mapped bytes.
/// </summary>
public sealed class LoraFile : IDisposable
{
    private readonly TensorFile file;

    private LoraFile(string path, TensorFile file, IReadOnlyList<LoraModule> modules)
    {
        Path = path;
        this.file = file;
        Modules = modules;
    }

    public string Path { get; }

    /// <summary>The file name without extension, as A1111's <c>&lt;lora:NAME:w&gt;</c> refers to it.</summary>
    public string Name => System.IO.Path.GetFileNameWithoutExtension(Path);

    public IReadOnlyList<LoraModule> Modules { get; }

    public IReadOnlyDictionary<string, string> Metadata => file.Metadata;

    public static LoraFile Load(string path)
    {
        if (!File.Exists(path)) throw new UserInputException(path, "the LoRA file does not exist");
        var file = TensorFile.Open(path);
        var modules = new List<LoraModule>();
        try
        {
            foreach (var keys in LoraKeys.Modules(path, file.Shapes.Keys))
                modules.Add(Read(file, keys));
            return new LoraFile(path, file, modules);
        }
        catch
        {
            foreach (var m in modules) Free(m);
            file.Dispose();
            throw;
        }
    }

    // Alpha must be one finite number and the weights finite (WeightChecks), or the refusal names the tensor.
    private static LoraModule Read(TensorFile file, LoraModuleKeys keys)
    {
        double? alpha = null;
        if (keys.Alpha is not null)
            using (var a = file.ReadTensor(keys.Alpha)) alpha = WeightChecks.Scalar(file.Path, keys.Alpha, a);
        var weights = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        Tensor? dora = null;
        try
        {
            foreach (var (part, key) in keys.Parts) weights[part] = Finite(file, key, $"{keys.Name} {part}");
            if (keys.DoraScale is not null) dora = Finite(file, keys.DoraScale, $"{keys.Name} dora_scale");
            return new LoraModule(keys.Target, keys.Name, keys.Algorithm, weights, alpha, dora);
        }
        catch
        {
            foreach (var t in weights.Values) t.Dispose();
            dora?.Dispose();
            throw;
        }
    }

    private static Tensor Finite(TensorFile file, string key, string what)
    {
        var tensor = file.ReadTensor(key);
        try
        {
            WeightChecks.RequireFinite(file.Path, what, tensor);
            return tensor;
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }

    private static void Free(LoraModule module)
    {
        foreach (var t in module.Weights.Values) t.Dispose();
        module.DoraScale?.Dispose();
    }

    public void Dispose()
    {
        foreach (var m in Modules) Free(m);
        file.Dispose();
    }
}
