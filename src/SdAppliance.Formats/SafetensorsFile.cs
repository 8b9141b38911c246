using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Text.Json;
using System.Text.Unicode;

namespace SdAppliance.Formats;

/// <summary>One tensor described by a safetensors header.</summary>
public sealed class SafetensorsEntry
{
    internal SafetensorsEntry(string name, SafetensorsDType dtype, long[] shape, long dataBegin, long dataEnd, long fileOffset)
    {
        Name = name;
        DType = dtype;
        Shape = shape;
        DataBegin = dataBegin;
        DataEnd = dataEnd;
        FileOffset = fileOffset;
    }

    /// <summary>The tensor's key in the header.</summary>
    public string Name { get; }

    /// <summary>Element type.</summary>
    public SafetensorsDType DType { get; }

    /// <summary>Dimensions, outermost first (row-major); empty for a scalar.</summary>
    public IReadOnlyList<long> Shape { get; }

    /// <summary>First byte, relative to the start of the data buffer (the header's data_offsets[0]).</summary>
    public long DataBegin { get; }

    /// <summary>One past the last byte, relative to the data buffer (data_offsets[1]).</summary>
    public long DataEnd { get; }

    /// <summary>Absolute position of the first byte in the file.</summary>
    public long FileOffset { get; }

    /// <summary>Size of the tensor's data in bytes.</summary>
    public long ByteLength => DataEnd - DataBegin;

    /// <summary>Number of elements (product of <see cref="Shape"/>).</summary>
    public long ElementCount => ByteLength / DType.ElementSize();

    /// <inheritdoc/>
    public override string ToString() => $"{Name}: {DType.ToHeaderName()}[{string.Join(", ", Shape)}]";
}

/// <summary>
/// A safetensors file opened read-only through a memory mapping. The header is parsed and fully
/// validated when the file is opened; tensor bytes are only touched when asked for, straight from
/// the mapping, so opening a multi-gigabyte model costs no more than reading its header.
/// <see cref="Write"/> writes one, byte-for-byte as the reference implementation does.
/// </summary>
/// <remarks>
/// Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON header, then the data
/// buffer that every tensor's data_offsets index into. Spans and pointers handed out are valid
/// only until <see cref="Dispose"/>. Data is at an 8-aligned file offset when the header length
/// is a multiple of 8, as every conforming writer pads it; otherwise pointers may be unaligned.
/// Reading from several threads at once is safe.
/// </remarks>
public sealed unsafe partial class SafetensorsFile : IDisposable
{
    /// <summary>Largest header accepted, the same limit as the reference implementation.</summary>
    public const long MaxHeaderLength = 100_000_000;

    private const string MetadataKey = "__metadata__";

    private readonly MemoryMappedFile _mapping;
    private readonly MemoryMappedViewAccessor _view;
    private readonly Dictionary<string, SafetensorsEntry> _byName;
    private byte* _base;

    private SafetensorsFile(string path, long fileLength, MemoryMappedFile mapping, MemoryMappedViewAccessor view, byte* basePointer)
    {
        Path = path;
        FileLength = fileLength;
        _mapping = mapping;
        _view = view;
        _base = basePointer;
        var header = Parse(path, new ReadOnlySpan<byte>(basePointer, (int)Math.Min(fileLength, 8 + MaxHeaderLength)), fileLength);
        HeaderLength = header.HeaderLength;
        Tensors = header.Tensors;
        Metadata = header.Metadata;
        _byName = header.Tensors.ToDictionary(e => e.Name, StringComparer.Ordinal);
    }

    /// <summary>The path the file was opened from.</summary>
    public string Path { get; }

    /// <summary>Total size of the file in bytes.</summary>
    public long FileLength { get; }

    /// <summary>Length of the JSON header (N), padding included.</summary>
    public long HeaderLength { get; }

    /// <summary>Absolute file offset of the data buffer.</summary>
    public long DataStart => 8 + HeaderLength;

    /// <summary>The tensors in the order their keys appear in the header.</summary>
    public IReadOnlyList<SafetensorsEntry> Tensors { get; }

    /// <summary>The header's "__metadata__" map; empty when the file has none.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Tensor names in header order.</summary>
    public IEnumerable<string> Names => Tensors.Select(e => e.Name);

    /// <summary>Opens and validates <paramref name="path"/>.</summary>
    /// <param name="path">The file.</param>
    /// <param name="copyOnWrite">Map the file privately: the mapped bytes may then be written (for
    /// tensors used in place), changes stay in this process and never reach the file.</param>
    /// <exception cref="SafetensorsFormatException">The file breaks the format.</exception>
    public static SafetensorsFile Open(string path, bool copyOnWrite = false)
    {
        var access = copyOnWrite ? MemoryMappedFileAccess.CopyOnWrite : MemoryMappedFileAccess.Read;
        ArgumentException.ThrowIfNullOrEmpty(path);
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
        MemoryMappedFile? mapping = null;
        MemoryMappedViewAccessor? view = null;
        var acquired = false;
        try
        {
            var length = stream.Length;
            // Checked before mapping because an empty file cannot be mapped at all.
            if (length < 8)
                throw new SafetensorsFormatException(path, $"the file is {length} bytes, shorter than the 8-byte header length prefix");
            mapping = MemoryMappedFile.CreateFromFile(stream, null, 0, access, HandleInheritability.None, leaveOpen: false);
            view = mapping.CreateViewAccessor(0, 0, access);
            byte* pointer = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
            acquired = true;
            return new SafetensorsFile(path, length, mapping, view, pointer + view.PointerOffset);
        }
        catch
        {
            if (acquired)
                view!.SafeMemoryMappedViewHandle.ReleasePointer();
            view?.Dispose();
            if (mapping is null)
                stream.Dispose();
            else
                mapping.Dispose();
            throw;
        }
    }

    /// <summary>Whether the file holds a tensor named <paramref name="name"/>.</summary>
    public bool Contains(string name) => _byName.ContainsKey(name);

    /// <summary>Looks a tensor up by name.</summary>
    public bool TryGetEntry(string name, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out SafetensorsEntry? entry) =>
        _byName.TryGetValue(name, out entry);

    /// <summary>The tensor named <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">No such tensor.</exception>
    public SafetensorsEntry this[string name] =>
        _byName.TryGetValue(name, out var entry) ? entry : throw new KeyNotFoundException($"'{Path}' has no tensor named '{name}'.");

    /// <summary>The tensor's bytes inside the mapping, without a copy.</summary>
    /// <exception cref="InvalidOperationException">The tensor is 2 GiB or more; use <see cref="GetPointer"/>.</exception>
    public ReadOnlySpan<byte> GetSpan(SafetensorsEntry entry)
    {
        var pointer = Locate(entry);
        if (entry.ByteLength > int.MaxValue)
            throw new InvalidOperationException($"Tensor '{entry.Name}' is {entry.ByteLength} bytes, too large for a span; use {nameof(GetPointer)}.");
        return new ReadOnlySpan<byte>(pointer, (int)entry.ByteLength);
    }

    /// <summary>The bytes of the tensor named <paramref name="name"/>, without a copy.</summary>
    public ReadOnlySpan<byte> GetSpan(string name) => GetSpan(this[name]);

    /// <summary>Address of the tensor's first byte inside the read-only mapping; <see cref="SafetensorsEntry.ByteLength"/> bytes follow.</summary>
    public nint GetPointer(SafetensorsEntry entry) => (nint)Locate(entry);

    /// <summary>A fresh copy of the tensor's bytes.</summary>
    public byte[] ReadBytes(SafetensorsEntry entry) => GetSpan(entry).ToArray();

    /// <summary>A fresh copy of the bytes of the tensor named <paramref name="name"/>.</summary>
    public byte[] ReadBytes(string name) => ReadBytes(this[name]);

    /// <summary>Copies the tensor's bytes into <paramref name="destination"/>, which must be exactly as long.</summary>
    public void ReadBytes(SafetensorsEntry entry, Span<byte> destination)
    {
        if (destination.Length != entry.ByteLength)
            throw new ArgumentException($"Tensor '{entry.Name}' is {entry.ByteLength} bytes, the destination {destination.Length}.", nameof(destination));
        GetSpan(entry).CopyTo(destination);
    }

    /// <summary>Unmaps the file; spans and pointers obtained earlier must no longer be used.</summary>
    public void Dispose()
    {
        if (_base == null)
            return;
        _base = null;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _mapping.Dispose();
    }

    private byte* Locate(SafetensorsEntry entry)
    {
        ArgumentNullException.ThrowIfNull(entry);
        ObjectDisposedException.ThrowIf(_base == null, this);
        // An entry from another file could point anywhere in this mapping.
        if (!_byName.TryGetValue(entry.Name, out var own) || !ReferenceEquals(own, entry))
            throw new ArgumentException($"Tensor '{entry.Name}' does not belong to '{Path}'.", nameof(entry));
        return _base + entry.FileOffset;
    }

    private sealed record Header(long HeaderLength, SafetensorsEntry[] Tensors, IReadOnlyDictionary<string, string> Metadata);

    private sealed record RawTensor(string Name, SafetensorsDType DType, long[] Shape, ulong Begin, ulong End);

    private static Header Parse(string path, ReadOnlySpan<byte> file, long fileLength)
    {
        SafetensorsFormatException Bad(string problem) => new(path, problem);

        var declared = BinaryPrimitives.ReadUInt64LittleEndian(file);
        if (declared > MaxHeaderLength)
            throw Bad($"the header length {declared} is over the {MaxHeaderLength}-byte limit");
        var headerLength = (long)declared;
        if (headerLength > fileLength - 8)
            throw Bad($"the header length {headerLength} runs past the end of the file ({fileLength} bytes)");
        var json = file.Slice(8, (int)headerLength);
        if (!Utf8.IsValid(json))
            throw Bad("the header is not valid UTF-8");

        var raw = new List<RawTensor>();
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        try
        {
            var reader = new Utf8JsonReader(json, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Disallow });
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
                throw Bad("the header is not a JSON object");
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                var key = reader.GetString()!;
                if (!seen.Add(key))
                    throw Bad($"the header has the key '{key}' twice");
                reader.Read();
                if (key == MetadataKey)
                    ReadMetadata(ref reader, metadata, Bad);
                else
                    raw.Add(ReadTensor(ref reader, key, Bad));
            }
            // Whitespace may follow the object (it is how the header is padded); anything else makes the reader throw.
            if (reader.Read())
                throw Bad("the header has content after its JSON object");
        }
        catch (JsonException e)
        {
            throw new SafetensorsFormatException(path, $"the header is not valid JSON: {e.Message}", e);
        }

        var dataLength = fileLength - 8 - headerLength;
        var entries = new SafetensorsEntry[raw.Count];
        for (var i = 0; i < raw.Count; i++)
        {
            var t = raw[i];
            var where = $"tensor '{t.Name}'";
            var shapeText = $"[{string.Join(", ", t.Shape)}]";
            if (!t.DType.TryByteLength(t.Shape, out var needed))
                throw Bad($"{where}: the size of shape {shapeText} overflows");
            if (t.End < t.Begin)
                throw Bad($"{where}: data_offsets [{t.Begin}, {t.End}] end before they begin");
            if (t.End > (ulong)dataLength)
                throw Bad($"{where}: data_offsets [{t.Begin}, {t.End}] run past the end of the {dataLength}-byte data buffer");
            var (begin, end) = ((long)t.Begin, (long)t.End);
            if (end - begin != needed)
                throw Bad($"{where}: data_offsets [{begin}, {end}] span {end - begin} bytes but {t.DType.ToHeaderName()} {shapeText} needs {needed}");
            entries[i] = new SafetensorsEntry(t.Name, t.DType, t.Shape, begin, end, 8 + headerLength + begin);
        }

        // The reference reader demands the tensors tile the data buffer exactly: no overlap, no hole, nothing after.
        var covered = 0L;
        SafetensorsEntry? previous = null;
        foreach (var e in entries.OrderBy(e => e.DataBegin).ThenBy(e => e.DataEnd))
        {
            if (e.DataBegin < covered)
                throw Bad($"tensor '{e.Name}' (bytes {e.DataBegin}..{e.DataEnd}) overlaps tensor '{previous!.Name}' (bytes {previous.DataBegin}..{previous.DataEnd})");
            if (e.DataBegin > covered)
                throw Bad($"bytes {covered}..{e.DataBegin} of the data buffer, before tensor '{e.Name}', belong to no tensor");
            covered = e.DataEnd;
            previous = e;
        }
        if (covered != dataLength)
            throw Bad($"the tensors cover {covered} bytes but the data buffer is {dataLength} bytes");

        return new Header(headerLength, entries, metadata);
    }

    private static void ReadMetadata(ref Utf8JsonReader reader, Dictionary<string, string> metadata, Func<string, SafetensorsFormatException> bad)
    {
        // The reference reads it as an optional map, so null means "none".
        if (reader.TokenType == JsonTokenType.Null)
            return;
        if (reader.TokenType != JsonTokenType.StartObject)
            throw bad($"'{MetadataKey}' is not an object of strings");
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            var key = reader.GetString()!;
            reader.Read();
            if (reader.TokenType != JsonTokenType.String)
                throw bad($"'{MetadataKey}' value for '{key}' is not a string");
            if (!metadata.TryAdd(key, reader.GetString()!))
                throw bad($"'{MetadataKey}' has the key '{key}' twice");
        }
    }

    private static RawTensor ReadTensor(ref Utf8JsonReader reader, string name, Func<string, SafetensorsFormatException> bad)
    {
        var where = $"tensor '{name}'";
        if (reader.TokenType != JsonTokenType.StartObject)
            throw bad($"{where}: its entry is not an object");
        SafetensorsDType? dtype = null;
        long[]? shape = null;
        ulong[]? offsets = null;
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            var field = reader.GetString()!;
            reader.Read();
            switch (field)
            {
                case "dtype":
                    if (dtype is not null)
                        throw bad($"{where}: 'dtype' is given twice");
                    if (reader.TokenType != JsonTokenType.String)
                        throw bad($"{where}: 'dtype' is not a string");
                    var dtypeName = reader.GetString()!;
                    dtype = SafetensorsDTypes.TryParseHeaderName(dtypeName, out var parsed)
                        ? parsed
                        : throw bad($"{where}: unknown dtype '{dtypeName}'");
                    break;
                case "shape":
                    if (shape is not null)
                        throw bad($"{where}: 'shape' is given twice");
                    shape = ReadIntegers(ref reader, bad, $"{where}: 'shape' is not an array of non-negative integers")
                        .Select(d => d <= long.MaxValue ? (long)d : throw bad($"{where}: shape dimension {d} overflows"))
                        .ToArray();
                    break;
                case "data_offsets":
                    if (offsets is not null)
                        throw bad($"{where}: 'data_offsets' is given twice");
                    offsets = ReadIntegers(ref reader, bad, $"{where}: 'data_offsets' is not an array of two non-negative integers").ToArray();
                    if (offsets.Length != 2)
                        throw bad($"{where}: 'data_offsets' has {offsets.Length} numbers instead of 2");
                    break;
                default:
                    // Unknown fields are ignored, as the reference reader ignores them.
                    reader.Skip();
                    break;
            }
        }
        if (dtype is null)
            throw bad($"{where}: 'dtype' is missing");
        if (shape is null)
            throw bad($"{where}: 'shape' is missing");
        if (offsets is null)
            throw bad($"{where}: 'data_offsets' is missing");
        return new RawTensor(name, dtype.Value, shape, offsets[0], offsets[1]);
    }

    private static List<ulong> ReadIntegers(ref Utf8JsonReader reader, Func<string, SafetensorsFormatException> bad, string problem)
    {
        if (reader.TokenType != JsonTokenType.StartArray)
            throw bad(problem);
        var values = new List<ulong>();
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            // TryGetUInt64 refuses signs, fractions and exponents, as deserializing a usize does.
            if (reader.TokenType != JsonTokenType.Number || !reader.TryGetUInt64(out var value))
                throw bad(problem);
            values.Add(value);
        }
        return values;
    }
}
