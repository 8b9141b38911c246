using System.Buffers;
using System.Buffers.Binary;
using System.Globalization;
using System.Text;

namespace SdAppliance.Formats;

/// <summary>
/// A tensor to be written: name, dtype, shape, and its row-major little-endian bytes, given either
/// in memory or as a callback that writes them to a stream when the writer reaches the tensor
/// (so a model can be saved one tensor at a time without holding a second copy of it).
/// </summary>
public sealed class SafetensorsTensor
{
    private readonly ReadOnlyMemory<byte> _bytes;
    private readonly Action<Stream>? _writeData;

    /// <summary>A tensor whose bytes are in memory; their length must match dtype and shape.</summary>
    public SafetensorsTensor(string name, SafetensorsDType dtype, IReadOnlyList<long> shape, ReadOnlyMemory<byte> bytes)
        : this(name, dtype, shape)
    {
        if (bytes.Length != ByteLength)
            throw new ArgumentException($"Tensor '{name}': {dtype.ToHeaderName()} [{string.Join(", ", Shape)}] needs {ByteLength} bytes, got {bytes.Length}.", nameof(bytes));
        _bytes = bytes;
    }

    /// <summary>
    /// A tensor whose bytes <paramref name="writeData"/> writes to the stream it is given; it must
    /// write exactly <see cref="ByteLength"/> bytes and must not keep the stream.
    /// </summary>
    public SafetensorsTensor(string name, SafetensorsDType dtype, IReadOnlyList<long> shape, Action<Stream> writeData)
        : this(name, dtype, shape)
    {
        ArgumentNullException.ThrowIfNull(writeData);
        _writeData = writeData;
    }

    private SafetensorsTensor(string name, SafetensorsDType dtype, IReadOnlyList<long> shape)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(shape);
        if (name == "__metadata__")
            throw new ArgumentException("'__metadata__' is reserved for the metadata map and cannot name a tensor.", nameof(name));
        if (!Enum.IsDefined(dtype))
            throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Not a safetensors dtype.");
        var dims = shape.ToArray();
        if (!dtype.TryByteLength(dims, out var bytes))
            throw new ArgumentException($"Tensor '{name}': shape [{string.Join(", ", dims)}] has a negative dimension or overflows.", nameof(shape));
        Name = name;
        DType = dtype;
        Shape = dims;
        ByteLength = bytes;
    }

    /// <summary>The key in the header.</summary>
    public string Name { get; }

    /// <summary>Element type.</summary>
    public SafetensorsDType DType { get; }

    /// <summary>Dimensions, outermost first; empty for a scalar.</summary>
    public IReadOnlyList<long> Shape { get; }

    /// <summary>Size of the data in bytes, from dtype and shape.</summary>
    public long ByteLength { get; }

    internal void WriteTo(Stream destination)
    {
        if (_writeData is null)
            destination.Write(_bytes.Span);
        else
            _writeData(destination);
    }
}

// The writer half of the format; the reader is in SafetensorsFile.cs.
public sealed partial class SafetensorsFile
{
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>
    /// Writes <paramref name="tensors"/> and <paramref name="metadata"/> to <paramref name="path"/>
    /// atomically (<see cref="AtomicFile"/>): readers see the old file or the complete new one, and a
    /// failure (a throwing callback, a full disk) leaves the target untouched and no temporary file.
    /// The bytes are those the reference implementation (huggingface/safetensors) writes: tensors ordered
    /// by dtype descending in the reference's dtype order (see <see cref="SafetensorsDType"/>) then by
    /// name, laid out back to back in that order, compact JSON with "__metadata__" first, the header
    /// padded with spaces to a multiple of 8 bytes.
    /// </summary>
    /// <remarks>
    /// The reference emits metadata keys in hash-map order, which is not reproducible; they are
    /// written here sorted by name (UTF-8 byte order), so the same input always gives the same file.
    /// </remarks>
    /// <param name="path">Target file; replaced if it exists.</param>
    /// <param name="tensors">Tensors with distinct names.</param>
    /// <param name="metadata">String pairs for "__metadata__"; null writes no "__metadata__" key at all.</param>
    /// <exception cref="ArgumentException">Duplicate tensor names or a name that is not valid UTF-16.</exception>
    /// <exception cref="SafetensorsFormatException">The header would exceed the size limit, or a callback wrote the wrong number of bytes.</exception>
    public static void Write(string path, IEnumerable<SafetensorsTensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(tensors);
        var ordered = Order(tensors);
        var header = BuildHeader(ordered, metadata);
        if (header.Length > MaxHeaderLength)
            throw new SafetensorsFormatException(path, $"the header would be {header.Length} bytes, over the {MaxHeaderLength}-byte limit");

        AtomicFile.Write(path, file =>
        {
            Span<byte> prefix = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)header.Length);
            file.Write(prefix);
            file.Write(header);
            using var data = new CountingStream(file);
            foreach (var (tensor, _) in ordered)
            {
                var before = data.Written;
                tensor.WriteTo(data);
                var written = data.Written - before;
                if (written != tensor.ByteLength)
                    throw new SafetensorsFormatException(path, $"tensor '{tensor.Name}' should be {tensor.ByteLength} bytes but its callback wrote {written}");
            }
        });
    }

    private static List<(SafetensorsTensor Tensor, byte[] Utf8Name)> Order(IEnumerable<SafetensorsTensor> tensors)
    {
        var list = new List<(SafetensorsTensor, byte[])>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var tensor in tensors)
        {
            ArgumentNullException.ThrowIfNull(tensor);
            if (!names.Add(tensor.Name))
                throw new ArgumentException($"Two tensors are named '{tensor.Name}'.", nameof(tensors));
            list.Add((tensor, Utf8Bytes(tensor.Name)));
        }
        // Rust compares strings by their UTF-8 bytes, which differs from UTF-16 ordinal order above U+FFFF.
        list.Sort((a, b) =>
        {
            var byDType = b.Item1.DType.CompareTo(a.Item1.DType);
            return byDType != 0 ? byDType : a.Item2.AsSpan().SequenceCompareTo(b.Item2);
        });
        return list;
    }

    private static byte[] BuildHeader(List<(SafetensorsTensor Tensor, byte[] Utf8Name)> ordered, IReadOnlyDictionary<string, string>? metadata)
    {
        var json = new ArrayBufferWriter<byte>();
        Ascii(json, "{");
        var first = true;
        if (metadata is not null)
        {
            Ascii(json, "\"__metadata__\":{");
            var pairs = metadata.Select(p => (Key: Utf8Bytes(p.Key), Value: Utf8Bytes(p.Value ?? throw new ArgumentException($"Metadata '{p.Key}' is null.", nameof(metadata)))))
                .OrderBy(p => p.Key, Comparer<byte[]>.Create((a, b) => a.AsSpan().SequenceCompareTo(b)));
            var firstPair = true;
            foreach (var (key, value) in pairs)
            {
                if (!firstPair)
                    Ascii(json, ",");
                firstPair = false;
                JsonString(json, key);
                Ascii(json, ":");
                JsonString(json, value);
            }
            Ascii(json, "}");
            first = false;
        }
        var offset = 0L;
        foreach (var (tensor, name) in ordered)
        {
            if (!first)
                Ascii(json, ",");
            first = false;
            JsonString(json, name);
            Ascii(json, $":{{\"dtype\":\"{tensor.DType.ToHeaderName()}\",\"shape\":[");
            Ascii(json, string.Join(",", tensor.Shape.Select(d => d.ToString(CultureInfo.InvariantCulture))));
            Ascii(json, string.Create(CultureInfo.InvariantCulture, $"],\"data_offsets\":[{offset},{offset + tensor.ByteLength}]}}"));
            offset += tensor.ByteLength;
        }
        Ascii(json, "}");
        // Padding to 8 keeps every tensor 8-aligned in the file, since the data buffer is laid out
        // largest-alignment dtypes first.
        while (json.WrittenCount % 8 != 0)
            Ascii(json, " ");
        return json.WrittenSpan.ToArray();
    }

    private static byte[] Utf8Bytes(string text)
    {
        try
        {
            return StrictUtf8.GetBytes(text);
        }
        catch (EncoderFallbackException e)
        {
            throw new ArgumentException($"'{text}' is not valid UTF-16 text and has no UTF-8 form.", e);
        }
    }

    private static void Ascii(ArrayBufferWriter<byte> json, string text) => json.Write(Encoding.ASCII.GetBytes(text));

    // serde_json's escaping, which the reference writer uses: only '"', '\\' and control characters
    // are escaped, the usual short escapes where they exist, else \u00xx in lowercase hex; all other
    // characters (non-ASCII included) are written as their raw UTF-8 bytes.
    private static void JsonString(ArrayBufferWriter<byte> json, byte[] utf8)
    {
        Ascii(json, "\"");
        foreach (var b in utf8)
        {
            var escape = b switch
            {
                (byte)'"' => "\\\"",
                (byte)'\\' => "\\\\",
                (byte)'\b' => "\\b",
                (byte)'\f' => "\\f",
                (byte)'\n' => "\\n",
                (byte)'\r' => "\\r",
                (byte)'\t' => "\\t",
                < 0x20 => $"\\u{b:x4}",
                _ => null,
            };
            if (escape is null)
                json.Write([b]);
            else
                Ascii(json, escape);
        }
        Ascii(json, "\"");
    }
}
