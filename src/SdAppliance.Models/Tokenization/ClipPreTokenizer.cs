using System.Globalization;
using System.Text;

namespace SdAppliance.Models.Tokenization;

/// <summary>
/// Splits normalised text the way CLIP's pattern does:
/// <c>SPECIALS|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+</c> (case-insensitive), with
/// unmatched characters (whitespace) skipped. A hand-written scanner rather than .NET's Regex, because Regex
/// sees UTF-16 code units: a letter outside the BMP would be two surrogates, not <c>\p{L}</c>, whereas the
/// reference works on code points. Every alternative is a single greedy character class or a literal, so
/// trying them in order at each position is exactly the regex's leftmost-first match.
/// </summary>
internal static class ClipPreTokenizer
{
    private static readonly string[] Contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"];

    /// <summary>A piece of text, or the index into <paramref name="specials"/> of a special token.</summary>
    public readonly record struct Piece(string Text, int Special);

    public static List<Piece> Split(string text, IReadOnlyList<string> specials)
    {
        var pieces = new List<Piece>();
        var pos = 0;
        while (pos < text.Length)
        {
            var special = MatchSpecial(text, pos, specials);
            if (special >= 0)
            {
                pieces.Add(new Piece(specials[special], special));
                pos += specials[special].Length;
                continue;
            }
            var contraction = text[pos] != '\'' ? -1 : Array.FindIndex(Contractions,
                c => string.Compare(text, pos, c, 0, c.Length, StringComparison.OrdinalIgnoreCase) == 0);
            if (contraction >= 0)
            {
                var length = Contractions[contraction].Length;
                pieces.Add(new Piece(text.Substring(pos, length), -1));
                pos += length;
                continue;
            }

            var rune = Rune.GetRuneAt(text, pos);
            var kind = Classify(rune);
            if (kind == CharKind.Space)
            {
                pos += rune.Utf16SequenceLength;
                continue;
            }
            var end = pos + rune.Utf16SequenceLength;
            if (kind != CharKind.Number)
            {
                // Letters and "other" characters run greedily; a digit is always a piece of its own.
                while (end < text.Length && Classify(Rune.GetRuneAt(text, end)) == kind)
                    end += Rune.GetRuneAt(text, end).Utf16SequenceLength;
            }
            pieces.Add(new Piece(text[pos..end], -1));
            pos = end;
        }
        return pieces;
    }

    private static int MatchSpecial(string text, int pos, IReadOnlyList<string> specials)
    {
        for (var i = 0; i < specials.Count; i++)
        {
            var s = specials[i];
            if (s.Length > 0 && pos + s.Length <= text.Length
                && string.Compare(text, pos, s, 0, s.Length, StringComparison.OrdinalIgnoreCase) == 0)
                return i;
        }
        return -1;
    }

    private enum CharKind { Letter, Number, Space, Other }

    private static CharKind Classify(Rune rune)
    {
        if (Rune.IsWhiteSpace(rune)) return CharKind.Space;
        return Rune.GetUnicodeCategory(rune) switch
        {
            UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
                or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter => CharKind.Letter,
            UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber
                => CharKind.Number,
            _ => CharKind.Other,
        };
    }
}
