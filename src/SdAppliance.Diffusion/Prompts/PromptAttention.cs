using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using SdAppliance.Formats;

namespace SdAppliance.Diffusion.Prompts;

/// <summary>A run of prompt text and its attention multiplier; <see cref="IsBreak"/> marks a <c>BREAK</c>.</summary>
public readonly record struct WeightedText(string Text, double Weight)
{
    public const string BreakText = "BREAK";

    /// <summary>
    /// A1111 encodes BREAK as the pair ("BREAK", -1); brackets around it multiply the -1 like any weight, and
    /// then it is no longer a break but the word "BREAK" with that (negative) weight, as in A1111.
    /// </summary>
    public bool IsBreak => Text == BreakText && Weight == -1;
}

/// <summary>
/// A1111's emphasis syntax (<c>modules/prompt_parser.py</c>, <c>parse_prompt_attention</c>):
/// <c>(text)</c> multiplies by 1.1, <c>[text]</c> divides by 1.1, <c>(text:w)</c> multiplies by w, nesting
/// multiplies, <c>\( \) \[ \] \\</c> are literal characters, <c>BREAK</c> (a whole word, in capitals) splits the
/// prompt into chunks. Brackets left open apply to the end of the prompt; closing brackets without an opening
/// one are ordinary text.
/// </summary>
public static partial class PromptAttention
{
    public const double RoundBracketMultiplier = 1.1;
    public const double SquareBracketMultiplier = 1 / 1.1;

    // A1111's re_attention, including the whitespace it allows around a weight (since 1.7): "(a : 1.2 )".
    [GeneratedRegex(@"\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:")]
    private static partial Regex AttentionToken();

    [GeneratedRegex(@"\s*\bBREAK\b\s*", RegexOptions.Singleline)]
    private static partial Regex Break();

    /// <summary>The prompt as runs of text with weights, adjacent runs of equal weight merged.</summary>
    /// <exception cref="FormatException">A weight such as <c>(a:1.2.3)</c> is not a number (A1111 fails too).</exception>
    public static List<WeightedText> Parse(string text)
    {
        // Mutable pairs because open brackets multiply everything appended after them.
        var res = new List<(string Text, double Weight)>();
        var roundBrackets = new Stack<int>();
        var squareBrackets = new Stack<int>();

        void MultiplyRange(int start, double multiplier)
        {
            for (var p = start; p < res.Count; p++) res[p] = (res[p].Text, res[p].Weight * multiplier);
        }

        foreach (Match m in AttentionToken().Matches(text))
        {
            var token = m.Value;
            var weight = m.Groups[1];
            if (token.StartsWith('\\'))
                res.Add((token[1..], 1.0));
            else if (token == "(")
                roundBrackets.Push(res.Count);
            else if (token == "[")
                squareBrackets.Push(res.Count);
            else if (weight.Success && roundBrackets.Count > 0)
                MultiplyRange(roundBrackets.Pop(), ParseWeight(weight.Value, text));
            else if (token == ")" && roundBrackets.Count > 0)
                MultiplyRange(roundBrackets.Pop(), RoundBracketMultiplier);
            else if (token == "]" && squareBrackets.Count > 0)
                MultiplyRange(squareBrackets.Pop(), SquareBracketMultiplier);
            else
            {
                var parts = Break().Split(token);
                for (var i = 0; i < parts.Length; i++)
                {
                    if (i > 0) res.Add((WeightedText.BreakText, -1));
                    res.Add((parts[i], 1.0));
                }
            }
        }

        // Python iterates the leftover bracket lists from the oldest; Stack enumerates newest first, and the
        // order changes the floating-point rounding of the products.
        foreach (var pos in roundBrackets.Reverse()) MultiplyRange(pos, RoundBracketMultiplier);
        foreach (var pos in squareBrackets.Reverse()) MultiplyRange(pos, SquareBracketMultiplier);

        if (res.Count == 0) res.Add(("", 1.0));

        var merged = new List<WeightedText>(res.Count);
        foreach (var (t, w) in res)
        {
            if (merged.Count > 0 && merged[^1].Weight == w)
                merged[^1] = merged[^1] with { Text = merged[^1].Text + t };
            else
                merged.Add(new WeightedText(t, w));
        }
        return merged;
    }

    private static double ParseWeight(string weight, string prompt)
    {
        // Python's float() reads any Unicode decimal digit, which the pattern's \d admits; .NET reads ASCII only.
        var ascii = new StringBuilder(weight.Length);
        foreach (var c in weight)
            ascii.Append(char.IsDigit(c) ? (char)('0' + (int)char.GetNumericValue(c)) : c);
        return double.TryParse(ascii.ToString(), NumberStyles.AllowLeadingSign | NumberStyles.AllowDecimalPoint,
            CultureInfo.InvariantCulture, out var value)
            ? value
            : throw new UserInputException("prompt", $"The prompt weight ':{weight})' is not a number, in: {prompt}");
    }
}
