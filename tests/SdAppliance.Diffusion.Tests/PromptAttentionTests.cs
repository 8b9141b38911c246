using SdAppliance.Diffusion.Prompts;
using SdAppliance.Formats;

namespace SdAppliance.Diffusion.Tests;

public class PromptAttentionTests
{
    private static void AssertParsed(string prompt, params (string Text, double Weight)[] expected)
    {
        // Exact weights: the products are the same IEEE double operations in the same order as A1111's, so
        // even A1111's rounding residue (1.5730000000000004) must come out bit for bit.
        Assert.Equal(expected, PromptAttention.Parse(prompt).Select(w => (w.Text, w.Weight)).ToArray());
    }

    // The examples of parse_prompt_attention's docstring.
    [Fact] public void NormalText() => AssertParsed("normal text", ("normal text", 1.0));

    [Fact] public void RoundBrackets() => AssertParsed("an (important) word", ("an ", 1.0), ("important", 1.1), (" word", 1.0));

    [Fact] public void UnbalancedOpeningBracketAppliesToTheEnd() => AssertParsed("(unbalanced", ("unbalanced", 1.1));

    [Fact] public void EscapedBrackets() => AssertParsed(@"\(literal\]", ("(literal]", 1.0));

    [Fact] public void IdenticalWeightsMerge() => AssertParsed("(unnecessary)(parens)", ("unnecessaryparens", 1.1));

    [Fact]
    public void NestedWeightsMultiply() => AssertParsed("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        ("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
        (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1));

    [Fact] public void SquareBracketsDivide() => AssertParsed("[[blurry]] sky", ("blurry", 1 / 1.1 * (1 / 1.1)), (" sky", 1.0));

    [Fact] public void WeightMayHaveSpaces() => AssertParsed("(red : 1.25 ) ball", ("red ", 1.25), (" ball", 1.0));

    [Fact] public void NegativeAndBareDecimalWeights() => AssertParsed("(a:-0.5)(b:.5)", ("a", -0.5), ("b", 0.5));

    [Fact]
    public void AllEscapes() => AssertParsed(@"\(a\) \[b\] c\\d", ("(a) [b] c\\d", 1.0));

    [Fact]
    public void LoneBackslashIsDropped() => AssertParsed(@"a \b", ("a b", 1.0));

    [Fact]
    public void ClosingBracketsWithoutOpeningAreText() => AssertParsed("a) b] c:1.5) d", ("a) b] c:1.5) d", 1.0));

    [Fact]
    public void ColonWithoutWeightInsideBracketsIsText() => AssertParsed("(a:b)", ("a:b", 1.1));

    [Fact]
    public void UnclosedSquareAndRoundCombine() =>
        AssertParsed("x [a (b", ("x ", 1.0), ("a ", 1 / 1.1), ("b", 1.1 * (1 / 1.1)));

    [Fact]
    public void EmptyPromptIsOneEmptyRun() => AssertParsed("", ("", 1.0));

    [Fact]
    public void BreakSplitsAndSwallowsSurroundingWhitespace()
    {
        var parsed = PromptAttention.Parse("a red ball BREAK\n a blue cube");
        Assert.Equal([("a red ball", 1.0), ("BREAK", -1.0), ("a blue cube", 1.0)], parsed.Select(w => (w.Text, w.Weight)));
        Assert.True(parsed[1].IsBreak);
        Assert.False(parsed[0].IsBreak);
    }

    [Fact]
    public void BreakMustBeAWholeWordInCapitals() =>
        AssertParsed("BREAKFAST break xBREAK", ("BREAKFAST break xBREAK", 1.0));

    [Fact]
    public void BreakInsideBracketsBecomesAWeightedWordAsInA1111()
    {
        var parsed = PromptAttention.Parse("(a BREAK b)");
        Assert.Equal([("a", 1.1), ("BREAK", -1.1), ("b", 1.1)], parsed.Select(w => (w.Text, w.Weight)));
        Assert.DoesNotContain(parsed, w => w.IsBreak);
    }

    [Fact]
    public void MalformedWeightIsAnError()
    {
        var ex = Assert.Throws<UserInputException>(() => PromptAttention.Parse("(a:1.2.3)"));
        Assert.Contains("1.2.3", ex.Message);
    }
}
