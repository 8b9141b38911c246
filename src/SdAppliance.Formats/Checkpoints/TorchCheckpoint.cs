using System.Buffers.Binary;
using System.IO.Compression;
using System.Numerics;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.Win32.SafeHandles;
using SdAppliance.Formats.Pickle;

namespace SdAppliance.Formats.Checkpoints;

/// <summary>How a checkpoint file is laid out.</summary>
public enum TorchCheckpointFormat
{
    /// <summary>torch.save since PyTorch 1.6: a zip of <c>&lt;folder&gt;/data.pkl</c>, <c>data/&lt;key&gt;</c> storages, <c>version</c>.</summary>
    Zip,

    /// <summary>torch.save before 1.6 (or with _use_new_zipfile_serialization=False): pickles followed by raw storages.</summary>
    Legacy,
}

/// <summary>
/// A PyTorch checkpoint (.ckpt, .pt, .pth, .bin) read with the restricted unpickler: the
/// unpickled object tree is available as <see cref="Root"/> (dicts, lists, numbers, strings and
/// lazy <see cref="TorchTensor"/> references), and <see cref="StateDict"/> finds the tensors.
/// Opening reads only the pickle; tensor bytes are read when asked for. Dispose to close the file.
/// </summary>
/// <remarks>
/// Any global outside <see cref="PickleGlobals"/> makes <see cref="Open"/> throw
/// <see cref="UnsafePickleException"/> naming it, before anything else in the file is looked at
/// further; no Python code is ever run. Reading tensors from several threads at once is safe.
/// </remarks>
public sealed class TorchCheckpoint : IDisposable
{
    // The legacy format starts with this number pickled, then the protocol version below.
    private static readonly BigInteger LegacyMagic = BigInteger.Parse("1950A86A20F9469CFC6C", System.Globalization.NumberStyles.HexNumber);
    private const long LegacyProtocolVersion = 1001;

    // Far above any real data.pkl (an SD .ckpt with optimizer state has a few MB), well below what would exhaust memory.
    private const long MaxPickleLength = 1L << 30;

    private static readonly Regex DataPklName = new(@"^([^/]+)/data\.pkl$", RegexOptions.CultureInvariant);

    private readonly StorageSource _source;
    private readonly List<TorchStorage> _storages;

    private TorchCheckpoint(string path, TorchCheckpointFormat format, object? root, StorageSource source, List<TorchStorage> storages, string? archiveFolder)
    {
        Path = path;
        Format = format;
        Root = root;
        _source = source;
        _storages = storages;
        ArchiveFolder = archiveFolder;
    }

    /// <summary>The file.</summary>
    public string Path { get; }

    /// <summary>Zip or legacy layout.</summary>
    public TorchCheckpointFormat Format { get; }

    /// <summary>The zip format's top folder (torch uses "archive" or the file's stem); null for the legacy format.</summary>
    public string? ArchiveFolder { get; }

    /// <summary>The unpickled object: usually a <see cref="PickleDict"/>.</summary>
    public object? Root { get; }

    /// <summary>Every storage the pickle references, in first-reference order.</summary>
    public IReadOnlyList<TorchStorage> Storages => _storages;

    /// <summary>Whether the file stores multi-byte values most significant byte first (they are swapped when read).</summary>
    public bool IsBigEndian => _source.IsBigEndian;

    /// <summary>Opens <paramref name="path"/> and unpickles it.</summary>
    /// <exception cref="UnsafePickleException">The pickle references a global that is not allowed.</exception>
    /// <exception cref="CheckpointFormatException">The file is not a readable checkpoint.</exception>
    public static TorchCheckpoint Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, bufferSize: 1 << 16, FileOptions.RandomAccess);
        try
        {
            Span<byte> head = stackalloc byte[8];
            var headLength = stream.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
            head = head[..headLength];
            stream.Position = 0;
            if (headLength == 0)
                throw new CheckpointFormatException(path, "the file is empty");
            if (head.StartsWith("PK\x03\x04"u8) || head.StartsWith("PK\x05\x06"u8))
                return OpenZip(path, stream);
            if (IsTar(stream))
                throw new CheckpointFormatException(path, "it is a tar archive, the checkpoint format of PyTorch before 0.4, which is not supported; re-save it with a newer PyTorch");
            if (head[0] == 0x80)
                return OpenLegacy(path, stream);
            if (headLength == 8 && BinaryPrimitives.ReadUInt64LittleEndian(head) < (ulong)stream.Length && LooksLikeSafetensors(stream))
                throw new CheckpointFormatException(path, "it is a safetensors file, not a pickled checkpoint; open it as safetensors");
            throw new CheckpointFormatException(path, $"it is neither a zip archive nor a pickle (it starts with bytes {Convert.ToHexString(head)})");
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The checkpoint's tensors by name: the top-level dict when it holds tensors, else the dict
    /// under "state_dict" (Lightning/A1111 .ckpt files; unwrapped repeatedly), "model" or "module".
    /// Entries whose value is not a tensor are left out.
    /// </summary>
    /// <exception cref="CheckpointFormatException">No dict of tensors is found there.</exception>
    public TorchStateDict StateDict()
    {
        var current = Root;
        var path = new List<string>();
        while (current is PickleDict dict)
        {
            if (dict.TryGetValue("state_dict", out var inner) && inner is PickleDict)
            {
                current = inner;
                path.Add("state_dict");
                continue;
            }
            if (!dict.Values.Any(v => v is TorchTensor))
            {
                var wrapper = new[] { "model", "module" }.FirstOrDefault(k => dict.TryGetValue(k, out var v) && v is PickleDict);
                if (wrapper is not null)
                {
                    current = dict[wrapper];
                    path.Add(wrapper);
                    continue;
                }
            }
            break;
        }

        var result = new TorchStateDict(string.Join("/", path));
        if (current is PickleDict found)
        {
            foreach (var (key, value) in found)
            {
                if (key is string name && value is TorchTensor tensor)
                    result.Add(name, tensor);
            }
        }
        if (result.Count == 0)
        {
            var keys = Root is PickleDict top ? string.Join(", ", top.Keys.Take(20).Select(PickleText.Repr)) : PickleText.TypeName(Root);
            throw new CheckpointFormatException(Path, $"no dict of tensors at the top level or under 'state_dict', 'model' or 'module' (the top level holds: {keys})");
        }
        return result;
    }

    /// <summary>Closes the file; tensors of this checkpoint can no longer be read.</summary>
    public void Dispose() => _source.Dispose();

    private static TorchCheckpoint OpenZip(string path, FileStream stream)
    {
        ZipArchive zip;
        try
        {
            zip = new ZipArchive(stream, ZipArchiveMode.Read, leaveOpen: false);
        }
        catch (InvalidDataException e)
        {
            throw new CheckpointFormatException(path, $"the zip archive is damaged or truncated (incomplete download?): {e.Message}", e);
        }
        var source = new ZipStorageSource(path, zip);
        try
        {
            var pickles = zip.Entries.Select(e => DataPklName.Match(e.FullName)).Where(m => m.Success).ToList();
            if (pickles.Count == 0)
                throw new CheckpointFormatException(path, "the zip archive has no <folder>/data.pkl, so it is not a PyTorch checkpoint");
            if (pickles.Count > 1)
                throw new CheckpointFormatException(path, $"the zip archive has {pickles.Count} data.pkl files ({string.Join(", ", pickles.Select(m => m.Value))})");
            var folder = pickles[0].Groups[1].Value;
            source.Prefix = folder + "/";

            var byteOrder = ReadSmallEntry(path, zip, source.Prefix + "byteorder");
            if (byteOrder is not null && byteOrder != "little" && byteOrder != "big")
                throw new CheckpointFormatException(path, $"the byteorder record says '{byteOrder}', not 'little' or 'big'");
            source.IsBigEndian = byteOrder == "big";

            var pickleEntry = zip.GetEntry(pickles[0].Value)!;
            if (pickleEntry.Length > MaxPickleLength)
                throw new CheckpointFormatException(path, $"{pickleEntry.FullName} is {pickleEntry.Length} bytes, more than the {MaxPickleLength} a checkpoint's pickle is allowed");
            CheckInflation(path, pickleEntry);
            byte[] pickle;
            try
            {
                using var pickleStream = pickleEntry.Open();
                pickle = new byte[pickleEntry.Length];
                pickleStream.ReadExactly(pickle);
                // A compressed entry must not inflate past the size its header declares.
                if (pickleStream.ReadByte() >= 0)
                    throw new CheckpointFormatException(path, $"{pickleEntry.FullName} holds more data than its declared {pickleEntry.Length} bytes");
            }
            catch (Exception e) when (e is InvalidDataException or EndOfStreamException)
            {
                throw new CheckpointFormatException(path, $"{pickleEntry.FullName} cannot be read from the archive: {e.Message}", e);
            }

            var storages = new Dictionary<string, TorchStorage>(StringComparer.Ordinal);
            var order = new List<TorchStorage>();
            object? PersistentLoad(object? pid)
            {
                var (key, dtype, location, numel) = ParseStoragePid(pid, legacy: false);
                if (storages.TryGetValue(key, out var known))
                    return known;
                var entry = zip.GetEntry($"{source.Prefix}data/{key}")
                    ?? throw new PickleCallException($"storage '{key}' has no {source.Prefix}data/{key} entry in the archive");
                var storage = new TorchStorage(key, dtype, numel, location, source);
                if (entry.Length < storage.ByteLength)
                    throw new PickleCallException($"storage '{key}' needs {storage.ByteLength} bytes ({numel} x {dtype.ToHeaderName()}) but {entry.FullName} holds {entry.Length}");
                CheckInflation(path, entry);
                source.Entries[key] = entry;
                storages.Add(key, storage);
                order.Add(storage);
                return storage;
            }

            var root = Unpickle(path, pickleEntry.FullName, () =>
            {
                using var data = new MemoryStream(pickle, writable: false);
                return new Unpickler(data, PersistentLoad).Load();
            });
            return new TorchCheckpoint(path, TorchCheckpointFormat.Zip, root, source, order, folder);
        }
        catch
        {
            source.Dispose();
            throw;
        }
    }

    // torch.save stores every entry uncompressed. A zip tool may recompress a checkpoint, and real weights
    // deflate little, but an entry that inflates more than 100 times to over 16 MiB is a zip bomb: its
    // declared size (read from the headers, before anything is inflated) would cost that much memory.
    private const long MaxInflationRatio = 100;
    private const long MaxInflatedWithoutCheck = 16L << 20;

    private static void CheckInflation(string path, ZipArchiveEntry entry)
    {
        if (entry.Length > MaxInflatedWithoutCheck && entry.Length > entry.CompressedLength * MaxInflationRatio)
            throw new CheckpointFormatException(path,
                $"{entry.FullName} declares {entry.Length} bytes compressed into {entry.CompressedLength}, more than {MaxInflationRatio} times; " +
                "a checkpoint's entries are stored uncompressed, and this one would inflate like a zip bomb");
    }

    private static TorchCheckpoint OpenLegacy(string path, FileStream stream)
    {
        var storages = new Dictionary<string, TorchStorage>(StringComparer.Ordinal);
        var order = new List<TorchStorage>();
        var source = new LegacyStorageSource(path, stream.SafeFileHandle, stream);
        try
        {
            var unpickler = new Unpickler(stream, pid => LegacyPersistentLoad(pid, storages, order, source));
            var magic = Unpickle(path, "the magic number", unpickler.Load);
            if (!(magic is BigInteger m && m == LegacyMagic))
                throw new CheckpointFormatException(path, $"it is a pickle but not a PyTorch checkpoint (the first value is {PickleText.Repr(magic)}, not torch's magic number)");
            var protocol = Unpickle(path, "the protocol version", unpickler.Load);
            if (protocol is not LegacyProtocolVersion)
                throw new CheckpointFormatException(path, $"legacy checkpoint protocol version {PickleText.Repr(protocol)} is not the supported {LegacyProtocolVersion}");
            var sysInfo = Unpickle(path, "the system information", unpickler.Load);
            if (sysInfo is PickleDict info && info.TryGetValue("little_endian", out var little) && little is false)
                source.IsBigEndian = true;
            var root = Unpickle(path, "the main pickle", unpickler.Load);
            var keys = Unpickle(path, "the storage key list", unpickler.Load) as List<object?>
                ?? throw new CheckpointFormatException(path, "the storage key list is not a list");

            // Each storage follows as an int64 element count and its raw bytes, in key-list order.
            var offset = unpickler.Position;
            var length = stream.Length;
            Span<byte> header = stackalloc byte[8];
            foreach (var item in keys)
            {
                if (item is not string key || !storages.TryGetValue(key, out var storage))
                    throw new CheckpointFormatException(path, $"the storage key list names {PickleText.Repr(item)}, which the pickle never references");
                if (offset + 8 > length)
                    throw new CheckpointFormatException(path, $"the file ends before the data of storage '{key}' (truncated file?)");
                RandomAccess.Read(stream.SafeFileHandle, header, offset);
                var count = source.IsBigEndian ? BinaryPrimitives.ReadInt64BigEndian(header) : BinaryPrimitives.ReadInt64LittleEndian(header);
                if (count < storage.ElementCount)
                    throw new CheckpointFormatException(path, $"storage '{key}' holds {count} elements but the pickle uses {storage.ElementCount}");
                var bytes = count * storage.DType.ElementSize();
                if (offset + 8 + bytes > length)
                    throw new CheckpointFormatException(path, $"the file ends inside the data of storage '{key}' (truncated file?)");
                source.Offsets[key] = offset + 8;
                offset += 8 + bytes;
            }
            var missing = storages.Keys.Where(k => !source.Offsets.ContainsKey(k)).ToList();
            if (missing.Count > 0)
                throw new CheckpointFormatException(path, $"the pickle references storages with no data: {string.Join(", ", missing.Take(10))}");
            return new TorchCheckpoint(path, TorchCheckpointFormat.Legacy, root, source, order, archiveFolder: null);
        }
        catch
        {
            source.Dispose();
            throw;
        }
    }

    // Legacy ids: ('storage', storage_type, root_key, location, root_numel, view_metadata),
    // view_metadata = None or (view_key, offset, view_size), offsets in elements.
    private static TorchStorage LegacyPersistentLoad(object? pid, Dictionary<string, TorchStorage> storages, List<TorchStorage> order, LegacyStorageSource source)
    {
        if (pid is PickleTuple { Count: > 0 } t && t[0] is "module")
            throw new PickleCallException("the checkpoint pickles a whole nn.Module with its source code, which is not supported; save its state_dict() instead");
        var (key, dtype, location, numel) = ParseStoragePid(pid, legacy: true);
        if (!storages.TryGetValue(key, out var root))
        {
            root = new TorchStorage(key, dtype, numel, location, source);
            storages.Add(key, root);
            order.Add(root);
        }
        var view = ((PickleTuple)pid!)[5];
        if (view is null)
            return root;
        if (view is not PickleTuple { Count: 3 } v || v[0] is not string || v[1] is not long viewOffset || v[2] is not long viewSize)
            throw new PickleCallException($"the storage view {PickleText.Repr(view)} is not (key, offset, size)");
        if (viewOffset < 0 || viewSize < 0 || viewOffset + viewSize > root.ElementCount)
            throw new PickleCallException($"the storage view ({viewOffset}, {viewSize}) lies outside storage '{key}' of {root.ElementCount} elements");
        return new TorchStorage(key, root.DType, viewSize, location, source, viewOffset * root.DType.ElementSize());
    }

    // Zip ids: ('storage', storage_type, key, location, numel).
    private static (string Key, SafetensorsDType DType, string Location, long Numel) ParseStoragePid(object? pid, bool legacy)
    {
        if (pid is not PickleTuple t || t.Count != (legacy ? 6 : 5) || t[0] is not "storage")
            throw new PickleCallException($"persistent id {PickleText.Repr(pid)} is not a {(legacy ? "legacy " : "")}storage reference");
        if (t[1] is not PickleGlobal type || !PickleGlobals.TryGetStorageDType(type, out var dtype))
            throw new PickleCallException($"storage type {PickleText.Repr(t[1])} is not a supported torch storage class");
        if (t[2] is not string key || key.Length == 0 || key.Contains('/') || key.Contains('\\') || key.Contains(".."))
            throw new PickleCallException($"storage key {PickleText.Repr(t[2])} is not a plain name");
        if (t[3] is not string location)
            throw new PickleCallException($"storage location {PickleText.Repr(t[3])} is not text");
        if (t[4] is not long numel || numel < 0 || numel > long.MaxValue / 8)
            throw new PickleCallException($"storage size {PickleText.Repr(t[4])} is not a valid element count");
        return (key, dtype, location, numel);
    }

    private static object? Unpickle(string path, string what, Func<object?> load)
    {
        try
        {
            var value = load();
            if (PickleNesting.Depth(value) is null)
                throw new CheckpointFormatException(path, $"{what}: its values nest more than {PickleNesting.MaxDepth} levels deep " +
                    "(tuples, lists or dicts inside each other), far deeper than any checkpoint; a file like this is made to crash its reader");
            return value;
        }
        catch (UnsafePickleException e)
        {
            throw e.WithFile(path);
        }
        catch (PickleFormatException e)
        {
            throw new CheckpointFormatException(path, $"{what}: {e.Message}", e);
        }
        catch (InvalidDataException e)
        {
            throw new CheckpointFormatException(path, $"{what} cannot be read: {e.Message}", e);
        }
    }

    private static string? ReadSmallEntry(string path, ZipArchive zip, string name)
    {
        var entry = zip.GetEntry(name);
        if (entry is null)
            return null;
        if (entry.Length > 64)
            throw new CheckpointFormatException(path, $"the {name} record is {entry.Length} bytes, more than such a record holds");
        try
        {
            using var stream = entry.Open();
            using var reader = new StreamReader(stream, Encoding.ASCII);
            return reader.ReadToEnd().Trim();
        }
        catch (InvalidDataException e)
        {
            throw new CheckpointFormatException(path, $"{name} cannot be read: {e.Message}", e);
        }
    }

    private static bool IsTar(FileStream stream)
    {
        if (stream.Length < 512)
            return false;
        Span<byte> magic = stackalloc byte[5];
        RandomAccess.Read(stream.SafeFileHandle, magic, 257);
        return magic.SequenceEqual("ustar"u8);
    }

    private static bool LooksLikeSafetensors(FileStream stream)
    {
        Span<byte> first = stackalloc byte[1];
        return RandomAccess.Read(stream.SafeFileHandle, first, 8) == 1 && first[0] == (byte)'{';
    }

    /// <summary>
    /// Storages in zip entries. Entry streams cannot seek, so the last one opened is kept and
    /// reads at or after its position continue from it: tensors that share a storage are read in
    /// order without rereading it from the start each time.
    /// </summary>
    private sealed class ZipStorageSource(string path, ZipArchive zip) : StorageSource(path)
    {
        private readonly Lock _lock = new();
        private string? _openKey;
        private Stream? _open;
        private long _openPosition;
        private bool _disposed;

        public string Prefix { get; set; } = "";

        public Dictionary<string, ZipArchiveEntry> Entries { get; } = new(StringComparer.Ordinal);

        public override void Read(TorchStorage storage, long byteOffset, Span<byte> destination)
        {
            lock (_lock)
            {
                ObjectDisposedException.ThrowIf(_disposed, typeof(TorchCheckpoint));
                try
                {
                    if (_open is null || _openKey != storage.Key || byteOffset < _openPosition)
                    {
                        _open?.Dispose();
                        _open = null;
                        _open = Entries[storage.Key].Open();
                        _openKey = storage.Key;
                        _openPosition = 0;
                    }
                    Skip(_open, byteOffset - _openPosition);
                    _open.ReadExactly(destination);
                    _openPosition = byteOffset + destination.Length;
                }
                catch (Exception e) when (e is InvalidDataException or EndOfStreamException or IOException)
                {
                    _open?.Dispose();
                    _open = null;
                    throw new CheckpointFormatException(Path, $"the data of storage '{storage.Key}' cannot be read: {e.Message}", e);
                }
            }
        }

        public override void Dispose()
        {
            lock (_lock)
            {
                if (_disposed)
                    return;
                _disposed = true;
                _open?.Dispose();
                zip.Dispose();
            }
        }

        private static void Skip(Stream stream, long count)
        {
            if (count == 0)
                return;
            var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(1 << 16);
            try
            {
                while (count > 0)
                {
                    var n = stream.Read(buffer, 0, (int)Math.Min(buffer.Length, count));
                    if (n == 0)
                        throw new EndOfStreamException("the entry ends early");
                    count -= n;
                }
            }
            finally
            {
                System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
            }
        }
    }

    /// <summary>Storages as records of the legacy file, read with positioned reads (no shared file position, so no lock).</summary>
    private sealed class LegacyStorageSource(string path, SafeFileHandle handle, FileStream owner) : StorageSource(path)
    {
        private volatile bool _disposed;

        public Dictionary<string, long> Offsets { get; } = new(StringComparer.Ordinal);

        public override void Read(TorchStorage storage, long byteOffset, Span<byte> destination)
        {
            ObjectDisposedException.ThrowIf(_disposed, typeof(TorchCheckpoint));
            var position = Offsets[storage.Key] + byteOffset;
            while (!destination.IsEmpty)
            {
                var n = RandomAccess.Read(handle, destination, position);
                if (n == 0)
                    throw new CheckpointFormatException(Path, $"the file ends inside the data of storage '{storage.Key}'");
                destination = destination[n..];
                position += n;
            }
        }

        public override void Dispose()
        {
            _disposed = true;
            owner.Dispose();
        }
    }
}
