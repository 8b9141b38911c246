using System.Globalization;
using System.Net;
using System.Text;

namespace SdAppliance.Models.Tokenization;

/// <summary>
/// openai CLIP's text clean-up before BPE: HTML-unescape twice, strip, collapse whitespace runs to one space,
/// strip, lower-case. ftfy's <c>fix_text</c>, the first step of the original, is left out, as in the goldens.
/// </summary>
internal static class ClipTextNormalizer
{
    public static string Normalize(string text)
    {
        // WebUtility.HtmlDecode knows fewer entities than Python's html.unescape (no HTML5-only names, no
        // semicolon-less forms); prompts use the common ones (&amp; &lt; &gt; &quot; &#NN;), which agree.
        var unescaped = WebUtility.HtmlDecode(WebUtility.HtmlDecode(text));
        return PythonLower(CollapseWhitespace(unescaped));
    }

    private static string CollapseWhitespace(string text)
    {
        var sb = new StringBuilder(text.Length);
        var pendingSpace = false;
        foreach (var rune in text.EnumerateRunes())
        {
            if (Rune.IsWhiteSpace(rune))
            {
                pendingSpace = sb.Length > 0;
                continue;
            }
            if (pendingSpace) sb.Append(' ');
            pendingSpace = false;
            sb.Append(rune.ToString());
        }
        return sb.ToString();
    }

    /// <summary>
    /// Python's <c>str.lower()</c>: full case mapping, which differs from .NET's simple mapping in exactly two
    /// places: U+0130 (dotted capital I) becomes "i" + U+0307, and capital sigma becomes final sigma at the end
    /// of a word.
    /// </summary>
    internal static string PythonLower(string text)
    {
        var runes = text.EnumerateRunes().ToArray();
        var sb = new StringBuilder(text.Length);
        for (var i = 0; i < runes.Length; i++)
        {
            var r = runes[i];
            if (r.Value == 0x130) sb.Append("i\u0307");
            else if (r.Value == 0x3A3) sb.Append(IsFinalSigma(runes, i) ? 'ς' : 'σ');
            else sb.Append(Rune.ToLowerInvariant(r).ToString());
        }
        return sb.ToString();
    }

    // Unicode's Final_Sigma context: a cased letter before (skipping case-ignorables) and none after.
    private static bool IsFinalSigma(Rune[] runes, int i)
    {
        var j = i - 1;
        while (j >= 0 && IsCaseIgnorable(runes[j])) j--;
        if (j < 0 || !IsCased(runes[j])) return false;
        j = i + 1;
        while (j < runes.Length && IsCaseIgnorable(runes[j])) j++;
        return j == runes.Length || !IsCased(runes[j]);
    }

    private static bool IsCased(Rune r) => Rune.GetUnicodeCategory(r) is
        UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter;

    // Approximates Unicode's Case_Ignorable (the categories plus the common Word_Break MidLetter/MidNumLet
    // characters); only the final-sigma decision depends on it.
    private static bool IsCaseIgnorable(Rune r) =>
        r.Value is '\'' or '.' or ':' or 0xB7 or 0x2018 or 0x2019 or 0x2024 or 0x2027 ||
        Rune.GetUnicodeCategory(r) is UnicodeCategory.NonSpacingMark or UnicodeCategory.EnclosingMark
            or UnicodeCategory.Format or UnicodeCategory.ModifierLetter or UnicodeCategory.ModifierSymbol;
}
