using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text.Json;

namespace SdAppliance.Formats.Hashing;

/// <summary>
/// The hashes A1111 and kohya sd-scripts identify model, LoRA and embedding files by, as lower-case hex. Hashing a
/// multi-gigabyte model takes seconds, so full-file hashes are kept in a cache file (A1111 keeps its <c>cache.json</c>
/// for the same reason) keyed by the file's full path, size and modification time: a changed file is hashed again.
/// </summary>
/// <remarks>
/// The cache only saves time: a missing, unreadable or corrupt cache file is treated as empty, and a cache that
/// cannot be written is skipped, so hashing never fails because of it. Concurrent processes may each hash a file
/// once; the last writer's cache wins, which loses nothing but time.
/// </remarks>
public sealed class FileHashes
{
    private const int BlockSize = 1 << 20;
    private static readonly JsonSerializerOptions JsonOptions = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };
    private readonly string? cacheFile;
    private readonly Lock gate = new();
    private Dictionary<string, CacheEntry>? entries;

    /// <param name="cacheFile">Where the computed hashes are kept (its folder is created when needed); null to keep none.</param>
    public FileHashes(string? cacheFile)
    {
        this.cacheFile = cacheFile is null ? null : Path.GetFullPath(cacheFile);
    }

    /// <summary>Hashes without a cache file (every call reads the file).</summary>
    public static FileHashes Uncached { get; } = new(null);

    /// <summary>The SHA-256 of the whole file (A1111's <c>sha256</c>, kohya's <c>ss_new_sd_model_hash</c>), cached.</summary>
    public string Sha256(string file) => Cached(file, "sha256", stream => Hash(stream));

    /// <summary>
    /// The SHA-256 of a safetensors file's tensor data, everything after its JSON header (sd-webui-additional-networks'
    /// and kohya's <c>addnet_hash_safetensors</c>): editing the metadata does not change it. Cached.
    /// </summary>
    public string AddNetSha256(string file) => Cached(file, "addnet_sha256", stream => AddNetSha256(stream, file));

    /// <summary><see cref="AddNetSha256(string)"/> of an open, seekable safetensors stream; <paramref name="name"/> names it in errors.</summary>
    public static string AddNetSha256(Stream safetensors, string name)
    {
        Span<byte> prefix = stackalloc byte[8];
        safetensors.Position = 0;
        if (safetensors.ReadAtLeast(prefix, 8, throwOnEndOfStream: false) < 8)
            throw new SafetensorsFormatException(name, "the file is shorter than the 8-byte header length");
        var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (headerLength > (ulong)(safetensors.Length - 8))
            throw new SafetensorsFormatException(name, $"the header length {headerLength} runs past the end of the file ({safetensors.Length} bytes)");
        safetensors.Position = 8 + (long)headerLength;
        return Hash(safetensors);
    }

    /// <summary>
    /// A1111's old 8-digit model hash (kohya's <c>ss_sd_model_hash</c>, sd-webui-additional-networks' legacy hash): the
    /// SHA-256 of the 64 KiB at offset 1 MiB, or of what the file holds there when it is shorter (nothing, for a file
    /// under 1 MiB). It reads 64 KiB, so it is not cached.
    /// </summary>
    public static string LegacyModelHash(string file)
    {
        using var stream = Open(file);
        return LegacyModelHash(stream);
    }

    /// <summary><see cref="LegacyModelHash(string)"/> of an open, seekable stream.</summary>
    public static string LegacyModelHash(Stream file)
    {
        var block = new byte[0x10000];
        var read = 0;
        if (file.Length > 0x100000)
        {
            file.Position = 0x100000;
            read = file.ReadAtLeast(block, block.Length, throwOnEndOfStream: false);
        }
        return Convert.ToHexStringLower(SHA256.HashData(block.AsSpan(0, read)))[..8];
    }

    /// <summary>A1111's "Model hash" of a checkpoint file: the first 10 hex digits of <see cref="Sha256"/>.</summary>
    public string ModelShortHash(string file) => Sha256(file)[..10];

    /// <summary>
    /// A1111's LoRA short hash (its "Lora hashes" field): the first 12 hex digits of <see cref="AddNetSha256(string)"/> for a
    /// <c>.safetensors</c> file, of <see cref="Sha256"/> for any other.
    /// </summary>
    /// <remarks>A file whose metadata carries <c>sshs_model_hash</c> (kohya writes it) is known by that, as A1111 does.</remarks>
    public string LoraShortHash(string file, IReadOnlyDictionary<string, string>? metadata = null) =>
        metadata is not null && metadata.TryGetValue("sshs_model_hash", out var stored) && stored.Length > 0
            ? stored[..Math.Min(12, stored.Length)]
            : (file.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) ? AddNetSha256(file) : Sha256(file))[..12];

    /// <summary>A1111's textual-inversion short hash (its "TI hashes" field): the first 12 hex digits of <see cref="Sha256"/>.</summary>
    public string EmbeddingShortHash(string file) => Sha256(file)[..12];

    private string Cached(string file, string kind, Func<FileStream, string> compute)
    {
        var path = Path.GetFullPath(file);
        var info = new FileInfo(path);
        if (!info.Exists) throw new UserInputException(file, "the file does not exist");
        var stamp = new CacheEntry { Size = info.Length, ModifiedTicks = info.LastWriteTimeUtc.Ticks };
        lock (gate)
        {
            entries ??= Load();
            if (entries.TryGetValue(path, out var known) && known.Size == stamp.Size && known.ModifiedTicks == stamp.ModifiedTicks
                && known.Hashes.TryGetValue(kind, out var hash))
                return hash;
        }

        string computed;
        using (var stream = Open(path))
            computed = compute(stream);

        lock (gate)
        {
            // Another kind of hash of the same, unchanged file stays; a changed file starts afresh.
            var entry = entries.TryGetValue(path, out var known) && known.Size == stamp.Size && known.ModifiedTicks == stamp.ModifiedTicks
                ? known
                : stamp;
            entry.Hashes[kind] = computed;
            entries[path] = entry;
            Save();
        }
        return computed;
    }

    private static FileStream Open(string file) => new(file, FileMode.Open, FileAccess.Read, FileShare.Read, BlockSize);

    private static string Hash(Stream stream)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[BlockSize];
        int read;
        while ((read = stream.Read(buffer)) > 0)
            sha.AppendData(buffer, 0, read);
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }

    private Dictionary<string, CacheEntry> Load()
    {
        if (cacheFile is null || !File.Exists(cacheFile)) return new(StringComparer.Ordinal);
        try
        {
            using var stream = File.OpenRead(cacheFile);
            return JsonSerializer.Deserialize<CacheContents>(stream, JsonOptions)?.Files is { } files
                ? new(files, StringComparer.Ordinal)
                : new(StringComparer.Ordinal);
        }
        catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException or NotSupportedException)
        {
            return new(StringComparer.Ordinal);
        }
    }

    private void Save()
    {
        if (cacheFile is null) return;
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(cacheFile)!);
            AtomicFile.Write(cacheFile, stream =>
                JsonSerializer.Serialize(stream, new CacheContents { Files = entries! }, JsonOptions));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A read-only data folder costs a re-hash next time, nothing else.
        }
    }

    private sealed class CacheContents
    {
        public int Version { get; init; } = 1;

        public Dictionary<string, CacheEntry> Files { get; init; } = [];
    }

    private sealed class CacheEntry
    {
        public long Size { get; init; }

        public long ModifiedTicks { get; init; }

        public Dictionary<string, string> Hashes { get; init; } = [];
    }
}
