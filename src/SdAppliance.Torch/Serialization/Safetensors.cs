using SdAppliance.Formats;

namespace SdAppliance.Torch.Serialization;

/// <summary>
/// Tensors in and out of <c>.safetensors</c> files. Reading is zero-copy: each tensor wraps its
/// bytes inside a private (copy-on-write) memory map, which stays mapped until the reader and
/// every tensor taken from it are disposed. Writing is atomic (temp name, then rename).
/// </summary>
public sealed class SafetensorsReader : IDisposable
{
    private readonly SafetensorsFile file;
    private int references = 1;  // the reader itself, plus one per live tensor

    private SafetensorsReader(SafetensorsFile file) => this.file = file;

    public static SafetensorsReader Open(string path) => new(SafetensorsFile.Open(path, copyOnWrite: true));

    public string Path => file.Path;

    public IReadOnlyList<SafetensorsEntry> Entries => file.Tensors;

    public IEnumerable<string> Names => file.Names;

    public IReadOnlyDictionary<string, string> Metadata => file.Metadata;

    public bool Contains(string name) => file.Contains(name);

    /// <summary>The tensor named <paramref name="name"/>, on CPU in the file's dtype, sharing the mapped bytes.</summary>
    public Tensor Get(string name) => Get(file[name]);

    public Tensor Get(SafetensorsEntry entry)
    {
        var shape = entry.Shape.ToArray();
        if (entry.DType is SafetensorsDType.F8E4M3 or SafetensorsDType.F8E5M2 && !Safetensors.EngineHasFloat8)
            return Float8.Decode(file.GetPointer(entry), entry.ElementCount, shape, entry.DType);
        var dtype = Safetensors.ToTorch(entry.DType, entry.Name, Path);
        if (Interlocked.Increment(ref references) == 1)
            throw new ObjectDisposedException(nameof(SafetensorsReader));
        return torch.FromExternalMemory(file.GetPointer(entry), shape, dtype, Release);
    }

    /// <summary>Every tensor, in file order.</summary>
    public Dictionary<string, Tensor> LoadAll()
    {
        var result = new Dictionary<string, Tensor>(file.Tensors.Count);
        foreach (var entry in file.Tensors) result[entry.Name] = Get(entry);
        return result;
    }

    private void Release()
    {
        if (Interlocked.Decrement(ref references) == 0) file.Dispose();
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref disposed, 1) == 0) Release();
    }

    private int disposed;
}

public static class Safetensors
{
    /// <summary>Loads every tensor of a file (zero-copy, CPU, file dtype).</summary>
    public static Dictionary<string, Tensor> Load(string path)
    {
        using var reader = SafetensorsReader.Open(path);
        return reader.LoadAll();
    }

    /// <summary>Writes tensors (any device, any supported dtype) and metadata atomically.</summary>
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var items = tensors.Select(kv => new SafetensorsTensor(kv.Key, ToSafetensors(kv.Value.DType, kv.Key), kv.Value.Shape, stream =>
        {
            // One tensor at a time on the host: a model larger than RAM still streams out.
            stream.Write(kv.Value.ToBytes());
        }));
        SafetensorsWriter.Write(path, items, metadata);
    }

    internal static bool EngineHasFloat8 => Version.TryParse(Engine.TorchVersion.Split('+')[0], out var v) && v >= new Version(2, 1);

    public static DType ToTorch(SafetensorsDType dtype, string name, string path) => dtype switch
    {
        SafetensorsDType.Bool => DType.Bool,
        SafetensorsDType.U8 => DType.UInt8,
        SafetensorsDType.I8 => DType.Int8,
        SafetensorsDType.I16 => DType.Int16,
        SafetensorsDType.I32 => DType.Int32,
        SafetensorsDType.I64 => DType.Int64,
        SafetensorsDType.F16 => DType.Float16,
        SafetensorsDType.BF16 => DType.BFloat16,
        SafetensorsDType.F32 => DType.Float32,
        SafetensorsDType.F64 => DType.Float64,
        SafetensorsDType.F8E4M3 => DType.Float8E4M3FN,
        SafetensorsDType.F8E5M2 => DType.Float8E5M2,
        _ => throw new SafetensorsFormatException(path, $"tensor '{name}' has dtype {dtype.ToHeaderName()}, which libtorch {Engine.TorchVersion} has no type for; convert it to a signed or floating type"),
    };

    public static SafetensorsDType ToSafetensors(DType dtype, string name) => dtype switch
    {
        DType.Bool => SafetensorsDType.Bool,
        DType.UInt8 => SafetensorsDType.U8,
        DType.Int8 => SafetensorsDType.I8,
        DType.Int16 => SafetensorsDType.I16,
        DType.Int32 => SafetensorsDType.I32,
        DType.Int64 => SafetensorsDType.I64,
        DType.Float16 => SafetensorsDType.F16,
        DType.BFloat16 => SafetensorsDType.BF16,
        DType.Float32 => SafetensorsDType.F32,
        DType.Float64 => SafetensorsDType.F64,
        DType.Float8E4M3FN => SafetensorsDType.F8E4M3,
        DType.Float8E5M2 => SafetensorsDType.F8E5M2,
        _ => throw new ArgumentException($"tensor '{name}' has dtype {dtype.TorchName()}, which safetensors cannot store"),
    };
}

/// <summary>
/// float8 decoding for libtorch builds without float8 types (before 2.1): the values become
/// float32, which holds every float8 value exactly.
/// </summary>
internal static unsafe class Float8
{
    public static Tensor Decode(byte[] bytes, long[] shape, SafetensorsDType dtype)
    {
        fixed (byte* data = bytes) return Decode((nint)data, bytes.Length, shape, dtype);
    }

    public static Tensor Decode(nint data, long count, long[] shape, SafetensorsDType dtype)
    {
        var bytes = new ReadOnlySpan<byte>((void*)data, checked((int)count));
        var values = new float[count];
        var table = dtype == SafetensorsDType.F8E4M3 ? E4M3 : E5M2;
        for (var i = 0; i < values.Length; i++) values[i] = table[bytes[i]];
        return torch.FromArray<float>(values, shape, DType.Float32);
    }

    private static readonly float[] E4M3 = Table(exponentBits: 4, mantissaBits: 3, bias: 7, finiteOnly: true);
    private static readonly float[] E5M2 = Table(exponentBits: 5, mantissaBits: 2, bias: 15, finiteOnly: false);

    // e4m3fn has no infinities and one NaN pattern per sign (all exponent and mantissa bits set);
    // e5m2 follows IEEE: all-ones exponent is inf (mantissa 0) or NaN.
    private static float[] Table(int exponentBits, int mantissaBits, int bias, bool finiteOnly)
    {
        var table = new float[256];
        var maxExponent = (1 << exponentBits) - 1;
        for (var b = 0; b < 256; b++)
        {
            var sign = (b & 0x80) != 0 ? -1f : 1f;
            var exponent = (b >> mantissaBits) & maxExponent;
            var mantissa = b & ((1 << mantissaBits) - 1);
            float value;
            if (finiteOnly && exponent == maxExponent && mantissa == (1 << mantissaBits) - 1) value = float.NaN;
            else if (!finiteOnly && exponent == maxExponent) value = mantissa == 0 ? float.PositiveInfinity : float.NaN;
            else if (exponent == 0) value = mantissa / (float)(1 << mantissaBits) * MathF.Pow(2, 1 - bias);
            else value = (1 + mantissa / (float)(1 << mantissaBits)) * MathF.Pow(2, exponent - bias);
            table[b] = sign * value;
        }
        return table;
    }
}
