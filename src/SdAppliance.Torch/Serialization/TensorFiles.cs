using System.Runtime.InteropServices;
using SdAppliance.Formats;

namespace SdAppliance.Torch.Serialization;

/// <summary>Engine tensors from a <see cref="TensorFile"/>.</summary>
public static class TensorFiles
{
    /// <summary>
    /// The tensor named <paramref name="name"/>, on CPU in the file's dtype: over the mapped bytes for a
    /// safetensors file (no copy; the mapping stays while the tensor lives), a copy for a pickle.
    /// </summary>
    public static Tensor ReadTensor(this TensorFile file, string name)
    {
        ArgumentNullException.ThrowIfNull(file);
        var shape = file.Shapes[name];
        var stored = file.DTypeOf(name);
        if (stored is SafetensorsDType.F8E4M3 or SafetensorsDType.F8E5M2 && !Safetensors.EngineHasFloat8)
            return Float8.Decode(file.ReadBytes(name), shape, stored);
        var dtype = Safetensors.ToTorch(stored, name, file.Path);
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

    private static unsafe Span<byte> Bytes(Tensor tensor)
    {
        var length = tensor.NumEl * tensor.ElementSize;
        if (length > int.MaxValue) throw new NotSupportedException($"a {length}-byte tensor is read from a pickle in pieces of at most 2 GiB; convert the file to safetensors");
        return new Span<byte>((void*)tensor.DataPointer, (int)length);
    }
}
