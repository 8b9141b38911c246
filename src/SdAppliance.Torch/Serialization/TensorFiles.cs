using SdAppliance.Formats;

namespace SdAppliance.Torch.Serialization;

/// <summary>
/// The bridge between engine tensors and weights files: tensors read from a <see cref="TensorFile"/> (zero-copy over
/// the private memory map of a <c>.safetensors</c> file, so loading a model does not hold its weights twice) and
/// tensors saved to <c>.safetensors</c> atomically (temp name, then rename). The file format itself lives in
/// SdAppliance.Formats (<see cref="SafetensorsFile"/> reads and writes it).
/// </summary>
public static class TensorFiles
{
    /// <summary>
    /// The tensor named <paramref name="name"/>, on CPU in the file's dtype: over the mapped bytes for a
    /// safetensors file (no copy; the mapping stays while the tensor lives, even after the file is disposed),
    /// a copy for a pickle.
    /// </summary>
    public static Tensor ReadTensor(this TensorFile file, string name)
    {
        ArgumentNullException.ThrowIfNull(file);
        var shape = file.Shapes[name];
        var stored = file.DTypeOf(name);
        if (stored is SafetensorsDType.F8E4M3 or SafetensorsDType.F8E5M2 && !EngineHasFloat8)
            return Float8.Decode(file.ReadBytes(name), shape, stored);
        var dtype = ToTorch(stored, name, file.Path);
        if (file.TryMap(name, out var address, out var release))
        {
            try
            {
                return torch.FromExternalMemory(address, shape, dtype, release);
            }
            catch
            {
                release();
                throw;
            }
        }
        var tensor = torch.Empty(shape, dtype);
        try
        {
            file.ReadBytes(name, Bytes(tensor));
            return tensor;
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }

    /// <summary>Every tensor of <paramref name="file"/>, in file order (see <see cref="ReadTensor"/>).</summary>
    public static Dictionary<string, Tensor> ReadAll(this TensorFile file)
    {
        ArgumentNullException.ThrowIfNull(file);
        var result = new Dictionary<string, Tensor>(file.Shapes.Count);
        foreach (var name in file.Names) result[name] = file.ReadTensor(name);
        return result;
    }

    /// <summary>Every tensor of the weights file at <paramref name="path"/> (see <see cref="ReadTensor"/>).</summary>
    public static Dictionary<string, Tensor> Load(string path)
    {
        using var file = TensorFile.Open(path);
        return file.ReadAll();
    }

    /// <summary>Writes tensors (any device, any supported dtype) and metadata to a <c>.safetensors</c> file, atomically.</summary>
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var items = tensors.Select(kv => new SafetensorsTensor(kv.Key, ToSafetensors(kv.Value.DType, kv.Key), kv.Value.Shape, stream =>
        {
            // One tensor at a time on the host: a model larger than RAM still streams out.
            stream.Write(kv.Value.ToBytes());
        }));
        SafetensorsFile.Write(path, items, metadata);
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

    private static unsafe Span<byte> Bytes(Tensor tensor)
    {
        var length = tensor.NumEl * tensor.ElementSize;
        if (length > int.MaxValue) throw new NotSupportedException($"a {length}-byte tensor is read from a pickle in pieces of at most 2 GiB; convert the file to safetensors");
        return new Span<byte>((void*)tensor.DataPointer, (int)length);
    }
}
