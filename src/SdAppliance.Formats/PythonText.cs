using System.Collections;
using System.Globalization;
using System.Text;

namespace SdAppliance.Formats;

/// <summary>
/// Values written as Python writes them, for the files and texts other tools compare as strings: kohya's
/// <c>ss_*</c> metadata (<c>str(v)</c>, <c>json.dumps</c>) and A1111's infotext numbers.
/// </summary>
public static class PythonText
{
    /// <summary>Python's <c>str(float)</c>: 7 → "7.0", 7.5 → "7.5", 1e-05, 1e+16, "-0.0", "nan", "inf".</summary>
    public static string Float(double value)
    {
        if (double.IsNaN(value)) return "nan";
        if (double.IsInfinity(value)) return value > 0 ? "inf" : "-inf";
        var sign = value < 0 || (value == 0 && double.IsNegative(value)) ? "-" : "";
        if (value == 0) return sign + "0.0";
        // Both languages print the shortest round-trip digits; they differ only in where the point goes.
        var r = Math.Abs(value).ToString("R", CultureInfo.InvariantCulture);
        var e = r.IndexOf('E', StringComparison.Ordinal);
        var mantissa = e < 0 ? r : r[..e];
        var exponent10 = e < 0 ? 0 : int.Parse(r[(e + 1)..], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
        var dot = mantissa.IndexOf('.', StringComparison.Ordinal);
        var integer = dot < 0 ? mantissa : mantissa[..dot];
        var all = integer + (dot < 0 ? "" : mantissa[(dot + 1)..]);
        var digits = all.TrimStart('0');
        // value = 0.<digits> x 10^point
        var point = integer.Length + exponent10 - (all.Length - digits.Length);
        digits = digits.TrimEnd('0');
        var scientific = point - 1;
        if (scientific is < -4 or >= 16)
        {
            var head = digits.Length > 1 ? $"{digits[0]}.{digits[1..]}" : digits;
            return $"{sign}{head}e{(scientific < 0 ? '-' : '+')}{Math.Abs(scientific):00}";
        }
        if (point <= 0) return $"{sign}0.{new string('0', -point)}{digits}";
        return point >= digits.Length
            ? $"{sign}{digits}{new string('0', point - digits.Length)}.0"
            : $"{sign}{digits[..point]}.{digits[point..]}";
    }

    /// <summary>Python's <c>str(bool)</c>.</summary>
    public static string Bool(bool value) => value ? "True" : "False";

    /// <summary>
    /// Python's <c>json.dumps</c> with its defaults (", " and ": " separators, <c>ensure_ascii</c>) of strings,
    /// integers, floats, booleans, null, lists and string-keyed dictionaries (in their order).
    /// </summary>
    public static string Json(object? value)
    {
        var text = new StringBuilder();
        Write(text, value);
        return text.ToString();
    }

    private static void Write(StringBuilder text, object? value)
    {
        switch (value)
        {
            case null: text.Append("null"); break;
            case string s: String(text, s, ensureAscii: true); break;
            case bool b: text.Append(b ? "true" : "false"); break;
            case int or long: text.Append(Convert.ToInt64(value, CultureInfo.InvariantCulture).ToString(CultureInfo.InvariantCulture)); break;
            case double d: text.Append(double.IsNaN(d) ? "NaN" : double.IsInfinity(d) ? (d > 0 ? "Infinity" : "-Infinity") : Float(d)); break;
            case IDictionary dict:
                text.Append('{');
                var first = true;
                foreach (DictionaryEntry entry in dict)
                {
                    if (!first) text.Append(", ");
                    first = false;
                    String(text, (string)entry.Key, ensureAscii: true);
                    text.Append(": ");
                    Write(text, entry.Value);
                }
                text.Append('}');
                break;
            case IEnumerable list:
                text.Append('[');
                var head = true;
                foreach (var item in list)
                {
                    if (!head) text.Append(", ");
                    head = false;
                    Write(text, item);
                }
                text.Append(']');
                break;
            default: throw new ArgumentException($"{value.GetType().Name} has no JSON form here", nameof(value));
        }
    }

    /// <summary>Python's <c>json.dumps</c> of a string; without <paramref name="ensureAscii"/> only quotes, backslashes and control characters are escaped.</summary>
    public static string JsonString(string value, bool ensureAscii = true)
    {
        var text = new StringBuilder(value.Length + 2);
        String(text, value, ensureAscii);
        return text.ToString();
    }

    private static void String(StringBuilder text, string value, bool ensureAscii)
    {
        text.Append('"');
        foreach (var c in value)
        {
            switch (c)
            {
                case '"': text.Append("\\\""); break;
                case '\\': text.Append("\\\\"); break;
                case '\n': text.Append("\\n"); break;
                case '\r': text.Append("\\r"); break;
                case '\t': text.Append("\\t"); break;
                case '\b': text.Append("\\b"); break;
                case '\f': text.Append("\\f"); break;
                case < ' ':
                case > '~' when ensureAscii:
                    text.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    break;
                default: text.Append(c); break;
            }
        }
        text.Append('"');
    }
}
