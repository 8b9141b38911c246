using System.Text.Json;
using SdAppliance.Formats;

namespace SdAppliance.Appliance.Catalog;

/// <summary>What the catalog reads from a model file's header (family, prediction type, metadata, embedding shape), computed once.</summary>
internal sealed record FileDescription(
    string? Family, string? PredictionType, Dictionary<string, string> Metadata, int? Vectors, int? Dimension, string? Problem);

/// <summary>
/// <see cref="FileDescription"/>s kept in a file of the cache folder, keyed like <c>Formats/Hashing/FileHashes</c> by full
/// path, size and modification time: a changed file is read again. A missing or corrupt cache file is an empty cache,
/// and one that cannot be written costs a re-read next start, never a failure.
/// </summary>
internal sealed class DescriptionCache(string file)
{
    private static readonly JsonSerializerOptions JsonOptions = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };
    private readonly Lock gate = new();
    private Dictionary<string, Entry>? entries;

    public FileDescription Get(string path, Func<FileDescription> describe)
    {
        var info = new FileInfo(path);
        var stamp = (info.Length, info.LastWriteTimeUtc.Ticks);
        lock (gate)
        {
            entries ??= Load();
            if (entries.TryGetValue(path, out var known) && (known.Size, known.ModifiedTicks) == stamp)
                return known.Description;
        }
        var description = describe();
        lock (gate)
        {
            entries[path] = new Entry(stamp.Length, stamp.Ticks, description);
            Save();
        }
        return description;
    }

    private Dictionary<string, Entry> Load()
    {
        try
        {
            if (!File.Exists(file)) return new(StringComparer.Ordinal);
            using var stream = File.OpenRead(file);
            return JsonSerializer.Deserialize<Dictionary<string, Entry>>(stream, JsonOptions) is { } loaded
                ? new(loaded, StringComparer.Ordinal)
                : new(StringComparer.Ordinal);
        }
        catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException or NotSupportedException)
        {
            return new(StringComparer.Ordinal);
        }
    }

    private void Save()
    {
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(file)!);
            AtomicFile.Write(file, stream => JsonSerializer.Serialize(stream, entries, JsonOptions));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A read-only data folder costs a re-read next time, nothing else.
        }
    }

    private sealed record Entry(long Size, long ModifiedTicks, FileDescription Description);
}
