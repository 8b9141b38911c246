using System.Buffers;

namespace SdAppliance.Formats.Checkpoints;

/// <summary>
/// A block of raw tensor data in a PyTorch checkpoint: one <c>data/&lt;key&gt;</c> entry of the zip
/// format, or one record of the legacy format. Tensors are views into storages, and several
/// tensors may share one.
/// </summary>
public sealed class TorchStorage
{
    internal TorchStorage(string key, SafetensorsDType dtype, long elementCount, string location, StorageSource source, long sourceByteOffset = 0)
    {
        Key = key;
        DType = dtype;
        ElementCount = elementCount;
        Location = location;
        Source = source;
        SourceByteOffset = sourceByteOffset;
    }

    /// <summary>The storage's key in the file (the zip entry is <c>data/{Key}</c>).</summary>
    public string Key { get; }

    /// <summary>Element type, from the pickled storage class (torch.FloatStorage is F32, ...).</summary>
    public SafetensorsDType DType { get; }

    /// <summary>Number of elements the checkpoint declares.</summary>
    public long ElementCount { get; }

    /// <summary>Where it was saved from ("cpu", "cuda:0"); informational, data is always read to memory.</summary>
    public string Location { get; }

    /// <summary>Size in bytes.</summary>
    public long ByteLength => ElementCount * DType.ElementSize();

    internal StorageSource Source { get; }

    // Legacy-format views start inside their root storage's record.
    internal long SourceByteOffset { get; }

    /// <summary>Copies bytes [<paramref name="byteOffset"/>, + destination length) of the storage, in little-endian order.</summary>
    internal void Read(long byteOffset, Span<byte> destination)
    {
        if (byteOffset < 0 || byteOffset + destination.Length > ByteLength)
            throw new ArgumentOutOfRangeException(nameof(byteOffset), $"Bytes {byteOffset}..{byteOffset + destination.Length} are outside storage '{Key}' ({ByteLength} bytes).");
        Source.Read(this, SourceByteOffset + byteOffset, destination);
        var size = DType.ElementSize();
        if (Source.IsBigEndian && size > 1)
        {
            // Whole elements only: every caller reads at element boundaries.
            for (var i = 0; i + size <= destination.Length; i += size)
                destination.Slice(i, size).Reverse();
        }
    }
}

/// <summary>Where storage bytes come from; one per opened checkpoint.</summary>
internal abstract class StorageSource(string path) : IDisposable
{
    /// <summary>The checkpoint file, for the messages of refusals found while reading.</summary>
    public string Path { get; } = path;

    public bool IsBigEndian { get; set; }

    public abstract void Read(TorchStorage storage, long byteOffset, Span<byte> destination);

    public abstract void Dispose();
}

/// <summary>
/// A tensor in a PyTorch checkpoint, described by the pickle (dtype, shape, strides, offset into
/// a storage) and read from the file only when its bytes are asked for. Strided views (a
/// transposed matrix saved without <c>.contiguous()</c>) are gathered element by element into
/// row-major order, so every byte array handed out is contiguous, little-endian data.
/// </summary>
public sealed class TorchTensor
{
    private const int CopyChunk = 4 << 20;

    private readonly long[] _shape;
    private readonly long[] _strides;

    private TorchTensor(TorchStorage storage, long storageOffset, long[] shape, long[] strides, bool requiresGrad, long elementCount)
    {
        Storage = storage;
        StorageOffset = storageOffset;
        _shape = shape;
        _strides = strides;
        RequiresGrad = requiresGrad;
        ElementCount = elementCount;
        IsContiguous = ComputeContiguous(shape, strides, elementCount);
    }

    /// <summary>The storage the tensor views.</summary>
    public TorchStorage Storage { get; }

    /// <summary>Element type.</summary>
    public SafetensorsDType DType => Storage.DType;

    /// <summary>Dimensions, outermost first; empty for a scalar.</summary>
    public IReadOnlyList<long> Shape => _shape;

    /// <summary>Elements to step in the storage per index of each dimension.</summary>
    public IReadOnlyList<long> Strides => _strides;

    /// <summary>Index of the first element in the storage, in elements.</summary>
    public long StorageOffset { get; }

    /// <summary>The requires_grad flag it was saved with.</summary>
    public bool RequiresGrad { get; internal set; }

    /// <summary>Whether it was saved as a torch.nn.Parameter.</summary>
    public bool IsParameter { get; internal set; }

    /// <summary>Number of elements.</summary>
    public long ElementCount { get; }

    /// <summary>Size of its row-major data in bytes.</summary>
    public long ByteLength => ElementCount * DType.ElementSize();

    /// <summary>Whether the elements lie in the storage in row-major order with no gaps (torch's is_contiguous).</summary>
    public bool IsContiguous { get; }

    /// <summary>The tensor's data, row-major and little-endian.</summary>
    /// <exception cref="CheckpointFormatException">The tensor is 2 GiB or more; use <see cref="WriteTo"/>.</exception>
    public byte[] ReadBytes()
    {
        if (ByteLength > Array.MaxLength)
            throw new CheckpointFormatException(Storage.Source.Path, $"a tensor of {ByteLength} bytes ({ToString()}) is too large to read into memory at once");
        var bytes = GC.AllocateUninitializedArray<byte>((int)ByteLength);
        ReadBytes(bytes);
        return bytes;
    }

    /// <summary>Copies the tensor's row-major data into <paramref name="destination"/>, which must be exactly <see cref="ByteLength"/> long.</summary>
    public void ReadBytes(Span<byte> destination)
    {
        if (destination.Length != ByteLength)
            throw new ArgumentException($"The tensor is {ByteLength} bytes, the destination {destination.Length}.", nameof(destination));
        if (ElementCount == 0)
            return;
        var size = DType.ElementSize();
        if (IsContiguous)
        {
            Storage.Read(StorageOffset * size, destination);
            return;
        }
        Gather(destination, size);
    }

    /// <summary>Writes the tensor's row-major data to <paramref name="destination"/> (contiguous tensors in chunks, so any size works).</summary>
    public void WriteTo(Stream destination)
    {
        ArgumentNullException.ThrowIfNull(destination);
        if (!IsContiguous)
        {
            destination.Write(ReadBytes());
            return;
        }
        var size = DType.ElementSize();
        var buffer = ArrayPool<byte>.Shared.Rent((int)Math.Min(CopyChunk, Math.Max(ByteLength, 1)));
        try
        {
            for (var done = 0L; done < ByteLength;)
            {
                // Chunks are a multiple of the element size so byte swapping sees whole elements.
                var count = (int)Math.Min(buffer.Length / size * size, ByteLength - done);
                Storage.Read(StorageOffset * size + done, buffer.AsSpan(0, count));
                destination.Write(buffer, 0, count);
                done += count;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>The tensor as something <see cref="SafetensorsFile.Write"/> (or the checkpoint writer) can write, read when written.</summary>
    public SafetensorsTensor ToSafetensorsTensor(string name) => new(name, DType, Shape, WriteTo);

    /// <inheritdoc/>
    public override string ToString() => $"{DType.ToHeaderName()}[{string.Join(", ", Shape)}]";

    /// <summary>Checks the view against its storage; returns null and a reason when it does not fit.</summary>
    internal static TorchTensor? TryCreate(TorchStorage storage, long storageOffset, long[] shape, long[] strides, bool requiresGrad, out string? problem)
    {
        problem = null;
        if (shape.Length != strides.Length)
            problem = $"the size has {shape.Length} dimensions but the stride {strides.Length}";
        else if (storageOffset < 0)
            problem = $"the storage offset {storageOffset} is negative";
        else if (shape.Any(d => d < 0))
            problem = $"the size [{string.Join(", ", shape)}] has a negative dimension";
        else if (strides.Any(s => s < 0))
            problem = $"the stride [{string.Join(", ", strides)}] has a negative step";
        if (problem is not null)
            return null;

        if (!SafetensorsDTypes.TryElementCount(shape, out var count) || count > long.MaxValue / storage.DType.ElementSize())
        {
            problem = $"the size [{string.Join(", ", shape)}] overflows";
            return null;
        }
        if (count > 0)
        {
            // The last element a view touches: offset + sum((size - 1) * stride).
            var last = storageOffset;
            try
            {
                checked
                {
                    for (var i = 0; i < shape.Length; i++)
                        last += (shape[i] - 1) * strides[i];
                }
            }
            catch (OverflowException)
            {
                last = long.MaxValue;
            }
            if (last >= storage.ElementCount)
            {
                problem = $"the view (offset {storageOffset}, size [{string.Join(", ", shape)}], stride [{string.Join(", ", strides)}]) " +
                          $"reaches element {last} but storage '{storage.Key}' has {storage.ElementCount} elements";
                return null;
            }
            // A stride of 0 (an expanded tensor) or overlapping strides repeat storage elements: a few bytes
            // in the file could claim gigabytes when read. torch.save keeps such views, but no model file has them.
            if (count > storage.ElementCount)
            {
                problem = $"the view (size [{string.Join(", ", shape)}], stride [{string.Join(", ", strides)}]) repeats elements " +
                          $"(a stride of 0 or overlapping strides) and would expand the {storage.ByteLength} bytes of storage '{storage.Key}' " +
                          $"into {count * storage.DType.ElementSize()}; save the tensor with .contiguous() or .clone() first";
                return null;
            }
        }
        return new TorchTensor(storage, storageOffset, shape, strides, requiresGrad, count);
    }

    private static bool ComputeContiguous(long[] shape, long[] strides, long count)
    {
        if (count == 0)
            return true;
        var expected = 1L;
        for (var i = shape.Length - 1; i >= 0; i--)
        {
            if (shape[i] != 1 && strides[i] != expected)
                return false;
            expected *= shape[i];
        }
        return true;
    }

    private void Gather(Span<byte> destination, int size)
    {
        var rank = _shape.Length;
        var shape = _shape;
        var strides = _strides;
        var last = 0L;
        for (var i = 0; i < rank; i++)
            last += (shape[i] - 1) * strides[i];
        // The source is read once, as the smallest range of the storage the view touches.
        var spanBytes = (last + 1) * size;
        if (spanBytes > Array.MaxLength)
            throw new CheckpointFormatException(Storage.Source.Path, $"a strided tensor ({ToString()}) spans {spanBytes} bytes of storage '{Storage.Key}', too many to gather in memory");
        var source = ArrayPool<byte>.Shared.Rent((int)spanBytes);
        try
        {
            Storage.Read(StorageOffset * size, source.AsSpan(0, (int)spanBytes));
            // Copy runs along the innermost dimension when it is dense, else single elements.
            var runDims = rank > 0 && strides[rank - 1] == 1 ? 1 : 0;
            var run = (runDims == 1 ? shape[rank - 1] : 1) * size;
            var outer = rank - runDims;
            var index = new long[outer];
            var src = 0L;
            for (var written = 0L; written < destination.Length; written += run)
            {
                source.AsSpan((int)(src * size), (int)run).CopyTo(destination.Slice((int)written, (int)run));
                // Odometer over the outer dimensions, keeping the source element index in step.
                for (var d = outer - 1; d >= 0; d--)
                {
                    index[d]++;
                    src += strides[d];
                    if (index[d] < shape[d])
                        break;
                    src -= strides[d] * shape[d];
                    index[d] = 0;
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(source);
        }
    }
}
