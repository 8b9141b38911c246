using System.Text.Json;
using System.Text.Json.Serialization;
using SdAppliance.Formats;

namespace SdAppliance.Models.Blocks;

/// <summary>
/// Reading and writing the <c>config.json</c> of a diffusers model folder: snake_case keys, keys we
/// do not model ignored (<c>_class_name</c>, <c>_diffusers_version</c>...), JSON null for "not set".
/// </summary>
public static class DiffusersConfig
{
    public static JsonSerializerOptions JsonOptions { get; } = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowReadingFromString,
    };

    // A config.json is a few kilobytes; a larger one is not a config (and is not read into memory).
    private const long MaxFileLength = 1 << 20;

    public static T Parse<T>(string json) =>
        JsonSerializer.Deserialize<T>(json, JsonOptions) ?? throw new JsonException($"config.json is null, not a {typeof(T).Name}");

    /// <summary>Reads a config file and checks its values (<see cref="IModelConfig.CheckValues"/>).</summary>
    /// <exception cref="ModelConfigException">Too large, not JSON, a value of the wrong type or out of range; names the file and the field.</exception>
    public static T Load<T>(string path) where T : IModelConfig => Load(path, text => JsonSerializer.Deserialize<T>(text, JsonOptions));

    /// <summary>The text of a model's config file, refused when it is too large to be one.</summary>
    public static string ReadText(string path)
    {
        var length = new FileInfo(path).Length;
        if (length > MaxFileLength)
            throw new ModelConfigException(path, null, $"is {length} bytes; a config.json is a few kilobytes (at most {MaxFileLength} are read)");
        return File.ReadAllText(path);
    }

    /// <summary>Reads <paramref name="path"/> with <paramref name="deserialize"/>, then checks the values; every failure names the file and the field.</summary>
    internal static T Load<T>(string path, Func<string, T?> deserialize) where T : IModelConfig
    {
        var json = ReadText(path);
        T? config;
        try
        {
            config = deserialize(json);
        }
        catch (JsonException e)
        {
            // The path is "$.block_out_channels[1]"; the message repeats it after the reason.
            var field = string.IsNullOrEmpty(e.Path) || e.Path == "$" ? null : e.Path.TrimStart('$', '.');
            throw new ModelConfigException(path, field, $"cannot be read: {e.Message}", e);
        }
        var loaded = config ?? throw new ModelConfigException(path, null, $"is null, not a {typeof(T).Name} object");
        loaded.CheckValues(path);
        return loaded;
    }

    public static string ToJson<T>(T config) => JsonSerializer.Serialize(config, JsonOptions);

    /// <summary>
    /// A per-block setting that diffusers accepts as one number for every block or as a list with
    /// one value per block; <paramref name="name"/> is for the error message.
    /// </summary>
    public static int[] PerBlock(IReadOnlyList<int> values, int blocks, string name) =>
        values.Count == 1 ? Enumerable.Repeat(values[0], blocks).ToArray()
        : values.Count == blocks ? [.. values]
        : throw new ArgumentException($"{name} has {values.Count} values for {blocks} blocks");
}

/// <summary>A model config whose values are range-checked when its file is read (<see cref="DiffusersConfig.Load{T}(string)"/>).</summary>
public interface IModelConfig
{
    /// <summary>Throws <see cref="ModelConfigException"/> naming <paramref name="source"/> and the first field no model could be built from.</summary>
    void CheckValues(string source);
}

/// <summary>
/// Reads a number or a list of numbers (diffusers writes <c>"attention_head_dim": 8</c> for SD 1.x
/// and <c>[5, 10, 20, 20]</c> for SD 2.x) as a list; writes a one-element list back as the number.
/// </summary>
public sealed class NumberOrListConverter : JsonConverter<IReadOnlyList<int>>
{
    public override IReadOnlyList<int> Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType == JsonTokenType.Number) return [Int(ref reader)];
        if (reader.TokenType != JsonTokenType.StartArray)
            throw new JsonException($"expected a number or a list of numbers, found {reader.TokenType}");
        var values = new List<int>();
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (reader.TokenType != JsonTokenType.Number)
                throw new JsonException($"expected a list of numbers, found {reader.TokenType} in it (nested lists are not supported)");
            values.Add(Int(ref reader));
        }
        return values;
    }

    private static int Int(ref Utf8JsonReader reader) =>
        reader.TryGetInt32(out var value) ? value : throw new JsonException($"expected a whole number that fits 32 bits, found {System.Text.Encoding.UTF8.GetString(reader.ValueSpan)}");

    public override void Write(Utf8JsonWriter writer, IReadOnlyList<int> value, JsonSerializerOptions options)
    {
        if (value.Count == 1)
        {
            writer.WriteNumberValue(value[0]);
            return;
        }
        writer.WriteStartArray();
        foreach (var v in value) writer.WriteNumberValue(v);
        writer.WriteEndArray();
    }
}

/// <summary>
/// Reads diffusers' <c>transformer_layers_per_block</c>: one number for every block, or one entry per block that is
/// a number (every layer of the block) or a list with one number per layer (asymmetric UNets such as SSD-1B's up
/// path, <c>reverse_transformer_layers_per_block</c>). Each entry is read as a list; one-value lists are written back
/// as numbers, so a config round-trips.
/// </summary>
public sealed class LayerDepthsConverter : JsonConverter<IReadOnlyList<IReadOnlyList<int>>>
{
    private static readonly NumberOrListConverter Entry = new();

    public override IReadOnlyList<IReadOnlyList<int>> Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType == JsonTokenType.Number) return [Entry.Read(ref reader, typeof(IReadOnlyList<int>), options)];
        if (reader.TokenType != JsonTokenType.StartArray)
            throw new JsonException($"expected a number or a list with a number or a list of numbers per block, found {reader.TokenType}");
        var entries = new List<IReadOnlyList<int>>();
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
            entries.Add(Entry.Read(ref reader, typeof(IReadOnlyList<int>), options));
        return entries;
    }

    public override void Write(Utf8JsonWriter writer, IReadOnlyList<IReadOnlyList<int>> value, JsonSerializerOptions options)
    {
        if (value.Count == 1 && value[0].Count == 1)
        {
            writer.WriteNumberValue(value[0][0]);
            return;
        }
        writer.WriteStartArray();
        foreach (var entry in value) Entry.Write(writer, entry, options);
        writer.WriteEndArray();
    }
}

/// <summary>Reads a boolean or a list of booleans (diffusers' <c>only_cross_attention</c>) as a list.</summary>
public sealed class BoolOrListConverter : JsonConverter<IReadOnlyList<bool>>
{
    public override IReadOnlyList<bool> Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType is JsonTokenType.True or JsonTokenType.False) return [reader.GetBoolean()];
        if (reader.TokenType != JsonTokenType.StartArray)
            throw new JsonException($"expected a boolean or a list of booleans, found {reader.TokenType}");
        var values = new List<bool>();
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (reader.TokenType is not (JsonTokenType.True or JsonTokenType.False))
                throw new JsonException($"expected a list of booleans, found {reader.TokenType} in it");
            values.Add(reader.GetBoolean());
        }
        return values;
    }

    public override void Write(Utf8JsonWriter writer, IReadOnlyList<bool> value, JsonSerializerOptions options)
    {
        if (value.Count == 1)
        {
            writer.WriteBooleanValue(value[0]);
            return;
        }
        writer.WriteStartArray();
        foreach (var v in value) writer.WriteBooleanValue(v);
        writer.WriteEndArray();
    }
}
