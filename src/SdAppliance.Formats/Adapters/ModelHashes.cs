using System.Buffers.Binary;
using System.Security.Cryptography;

namespace SdAppliance.Formats.Adapters;

/// <summary>
/// The hashes tools identify model, LoRA and embedding files by (FORMATS §4.2, §4.9): A1111's short hashes,
/// kohya's model hashes, and the sd-webui-additional-networks ("addnet") hashes of a safetensors file.
/// </summary>
public static class ModelHashes
{
    /// <summary>SHA-256 of the whole file, lower-case hex (kohya's <c>calculate_sha256</c>, A1111's full hash).</summary>
    public static string Sha256(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    /// <summary>A1111's "Model hash" and checkpoint <c>shorthash</c>: the first 10 hex digits of the file's SHA-256.</summary>
    public static string A1111ShortHash(string path) => Sha256(path)[..10];

    /// <summary>kohya's <c>model_hash</c> (A1111's old model hash): <see cref="AddnetLegacyHash"/> of the file.</summary>
    public static string KohyaLegacyHash(string path)
    {
        using var stream = File.OpenRead(path);
        return AddnetLegacyHash(stream);
    }

    /// <summary><c>addnet_hash_safetensors</c>: SHA-256 (hex) of everything after the 8-byte length and the header.</summary>
    public static string AddnetModelHash(Stream safetensors)
    {
        ArgumentNullException.ThrowIfNull(safetensors);
        Span<byte> prefix = stackalloc byte[8];
        safetensors.Seek(0, SeekOrigin.Begin);
        safetensors.ReadExactly(prefix);
        var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        safetensors.Seek(checked(8 + (long)headerLength), SeekOrigin.Begin);
        return Convert.ToHexStringLower(SHA256.HashData(safetensors));
    }

    /// <summary><c>addnet_hash_legacy</c>: the first 8 hex digits of SHA-256 over the 64 KiB at offset 0x100000 (fewer, or none, in a smaller file).</summary>
    public static string AddnetLegacyHash(Stream file)
    {
        ArgumentNullException.ThrowIfNull(file);
        var buffer = new byte[0x10000];
        var count = 0;
        if (file.Length > 0x100000)
        {
            file.Seek(0x100000, SeekOrigin.Begin);
            count = file.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
        }
        return Convert.ToHexStringLower(SHA256.HashData(buffer.AsSpan(0, count)))[..8];
    }

    /// <summary>
    /// A1111's LoRA hash for "Lora hashes": the file's <c>sshs_model_hash</c> metadata when it has one, else
    /// the addnet hash of a safetensors file (SHA-256 of the whole file for others); the first 12 hex digits.
    /// </summary>
    public static string A1111LoraShortHash(string path, IReadOnlyDictionary<string, string> metadata)
    {
        if (metadata.TryGetValue("sshs_model_hash", out var stored) && stored.Length > 0) return stored[..Math.Min(12, stored.Length)];
        if (!path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)) return Sha256(path)[..12];
        using var stream = File.OpenRead(path);
        return AddnetModelHash(stream)[..12];
    }

    /// <summary>A1111's textual-inversion hash for "TI hashes": the first 12 hex digits of the file's SHA-256.</summary>
    public static string A1111EmbeddingShortHash(string path) => Sha256(path)[..12];
}
