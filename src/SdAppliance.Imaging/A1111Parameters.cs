using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using SdAppliance.Formats;

namespace SdAppliance.Imaging;

/// <summary>
/// AUTOMATIC1111's "infotext": the generation parameters its PNG Info tab reads from the <c>parameters</c>
/// text chunk. Layout: the prompt, then <c>Negative prompt: ...</c> when there is one, then one line of
/// <c>Key: value</c> settings joined by ", " with values holding ',', ':' or a newline written as JSON strings.
/// Settings keep their order; values are the text as written (callers format numbers, see <see cref="FormatFloat"/>).
/// </summary>
public sealed partial class A1111Parameters
{
    private const string NegativePrefix = "Negative prompt:";

    public string Prompt { get; set; } = "";

    public string NegativePrompt { get; set; } = "";

    /// <summary>The settings line, in order (A1111's order: Steps, Sampler, Schedule type, CFG scale, Seed, Size, Model hash, Model, ...).</summary>
    public List<KeyValuePair<string, string>> Settings { get; } = [];

    /// <summary>A setting's value, or null; setting a value replaces it in place or appends it, null removes it.</summary>
    public string? this[string key]
    {
        get
        {
            int index = Settings.FindIndex(kv => kv.Key == key);
            return index < 0 ? null : Settings[index].Value;
        }
        set
        {
            int index = Settings.FindIndex(kv => kv.Key == key);
            if (value is null)
            {
                if (index >= 0)
                {
                    Settings.RemoveAt(index);
                }
            }
            else if (index >= 0)
            {
                Settings[index] = new(key, value);
            }
            else
            {
                Settings.Add(new(key, value));
            }
        }
    }

    /// <summary>Appends a setting and returns this, for building in A1111's order.</summary>
    public A1111Parameters Add(string key, string value)
    {
        this[key] = value;
        return this;
    }

    /// <summary>The infotext as A1111's <c>create_infotext</c> writes it.</summary>
    public override string ToString()
    {
        var text = new StringBuilder(Prompt);
        if (NegativePrompt.Length > 0)
        {
            text.Append('\n').Append(NegativePrefix).Append(' ').Append(NegativePrompt);
        }
        text.Append('\n');
        // A1111 writes a bare key for a flag whose value equals its key.
        text.AppendJoin(", ", Settings.Select(kv => kv.Key == kv.Value ? kv.Key : $"{kv.Key}: {Quote(kv.Value)}"));
        return text.ToString().Trim();
    }

    /// <summary>
    /// Parses an infotext as A1111's <c>parse_generation_parameters</c>: the last line is the settings line
    /// only if the setting pattern matches it at least 3 times; other lines before "Negative prompt:" are the
    /// prompt, and from it on the negative prompt. JSON-quoted values are unquoted; a setting with an empty
    /// value is dropped (A1111 fails on it and skips it).
    /// </summary>
    public static A1111Parameters Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var result = new A1111Parameters();
        var lines = text.Trim().Split('\n').ToList();
        string last = lines[^1];
        lines.RemoveAt(lines.Count - 1);
        var matches = SettingPattern().Matches(last);
        if (matches.Count < 3)
        {
            lines.Add(last);
            matches = SettingPattern().Matches("");
        }

        var prompt = new List<string>();
        var negative = new List<string>();
        bool inNegative = false;
        foreach (string raw in lines)
        {
            string line = raw.Trim();
            if (line.StartsWith(NegativePrefix, StringComparison.Ordinal))
            {
                inNegative = true;
                line = line[NegativePrefix.Length..].Trim();
            }
            (inNegative ? negative : prompt).Add(line);
        }
        result.Prompt = string.Join('\n', prompt);
        result.NegativePrompt = string.Join('\n', negative);

        foreach (Match m in matches)
        {
            string key = m.Groups[1].Value, value = m.Groups[2].Value;
            if (value.Length == 0)
            {
                continue;
            }
            result[key] = value.Length >= 2 && value[0] == '"' && value[^1] == '"' ? Unquote(value) : value;
        }
        return result;
    }

    /// <summary>
    /// The settings as the dictionary A1111's parser returns: "Prompt", "Negative prompt", each setting with
    /// <c>WxH</c> values split into "Key-1"/"Key-2", and the defaults it fills for missing keys
    /// (Clip skip 1, RNG GPU, Schedule type Automatic).
    /// </summary>
    public Dictionary<string, string> ToDictionary()
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in Settings)
        {
            if (SizePattern().Match(value) is { Success: true } size)
            {
                result[$"{key}-1"] = size.Groups[1].Value;
                result[$"{key}-2"] = size.Groups[2].Value;
            }
            else
            {
                result[key] = value;
            }
        }
        result["Prompt"] = Prompt;
        result["Negative prompt"] = NegativePrompt;
        result.TryAdd("Clip skip", "1");
        result.TryAdd("RNG", "GPU");
        result.TryAdd("Schedule type", "Automatic");
        return result;
    }

    /// <summary>A value as A1111's <c>quote</c> writes it: as is, or as a JSON string (non-ASCII kept) when it holds ',', ':' or a newline.</summary>
    public static string Quote(string value)
    {
        if (value.AsSpan().IndexOfAny(",:\n") < 0)
        {
            return value;
        }
        return PythonText.JsonString(value, ensureAscii: false);
    }

    /// <summary>A number as Python's <c>str(float)</c> writes it, as A1111's settings show them: 7 -> "7.0", 7.5 -> "7.5", 1e-05.</summary>
    public static string FormatFloat(double value) => PythonText.Float(value);

    private static string Unquote(string value)
    {
        try
        {
            return JsonSerializer.Deserialize<string>(value) ?? value;
        }
        catch (JsonException)
        {
            return value;
        }
    }

    // infotext_utils.re_param: a key starting with a word character, then a JSON string or text up to the next comma.
    [GeneratedRegex("""\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)""")]
    private static partial Regex SettingPattern();

    [GeneratedRegex("""^(\d+)x(\d+)$""")]
    private static partial Regex SizePattern();
}
