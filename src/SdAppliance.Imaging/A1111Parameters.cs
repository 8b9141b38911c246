using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

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
        // Python's json.dumps(ensure_ascii=False): escapes ", \ and control characters only.
        var json = new StringBuilder(value.Length + 2).Append('"');
        foreach (char c in value)
        {
            switch (c)
            {
                case '"': json.Append("\\\""); break;
                case '\\': json.Append("\\\\"); break;
                case '\n': json.Append("\\n"); break;
                case '\r': json.Append("\\r"); break;
                case '\t': json.Append("\\t"); break;
                case '\b': json.Append("\\b"); break;
                case '\f': json.Append("\\f"); break;
                case < ' ': json.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture)); break;
                default: json.Append(c); break;
            }
        }
        return json.Append('"').ToString();
    }

    /// <summary>A number as Python's <c>str(float)</c> writes it, as A1111's settings show them: 7 -> "7.0", 7.5 -> "7.5", 1e-05.</summary>
    public static string FormatFloat(double value)
    {
        if (double.IsNaN(value))
        {
            return "nan";
        }
        if (double.IsInfinity(value))
        {
            return value > 0 ? "inf" : "-inf";
        }
        string sign = value < 0 || (value == 0 && double.IsNegative(value)) ? "-" : "";
        if (value == 0)
        {
            return sign + "0.0";
        }
        // Both languages print the shortest round-trip digits; they differ only in where the point goes.
        string r = Math.Abs(value).ToString("R", CultureInfo.InvariantCulture);
        int e = r.IndexOf('E', StringComparison.Ordinal);
        string mantissa = e < 0 ? r : r[..e];
        int exponent10 = e < 0 ? 0 : int.Parse(r[(e + 1)..], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
        int dot = mantissa.IndexOf('.', StringComparison.Ordinal);
        string integer = dot < 0 ? mantissa : mantissa[..dot];
        string all = integer + (dot < 0 ? "" : mantissa[(dot + 1)..]);
        string digits = all.TrimStart('0');
        // value = 0.<digits> x 10^point
        int point = integer.Length + exponent10 - (all.Length - digits.Length);
        digits = digits.TrimEnd('0');
        int scientific = point - 1;
        if (scientific is < -4 or >= 16)
        {
            string head = digits.Length > 1 ? $"{digits[0]}.{digits[1..]}" : digits;
            return $"{sign}{head}e{(scientific < 0 ? '-' : '+')}{Math.Abs(scientific):00}";
        }
        if (point <= 0)
        {
            return $"{sign}0.{new string('0', -point)}{digits}";
        }
        return point >= digits.Length
            ? $"{sign}{digits}{new string('0', point - digits.Length)}.0"
            : $"{sign}{digits[..point]}.{digits[point..]}";
    }

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
