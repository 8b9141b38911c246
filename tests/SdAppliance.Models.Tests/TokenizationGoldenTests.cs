using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Models.Loading;
using SdAppliance.Models.Tokenization;
using static SdAppliance.Models.Tests.TokenizationFixtures;

namespace SdAppliance.Models.Tests;

public class TokenizationGoldenTests
{
    private static readonly Lazy<ClipTokenizer> Tiny = new(() => ClipTokenizer.FromFolder(TinyTokenizerFolder));

    private static readonly Lazy<(ClipTokenizer Tokenizer, ClipTokenizer Tokenizer2)> TinySdxlTokenizers = new(() =>
    {
        var (tokenizer, tokenizer2) = ModelLoader.LoadTokenizers(Fixture("tiny-sdxl"), ModelFamily.XlBase, new ModelLoadOptions());
        return (tokenizer, tokenizer2!);
    });

    public static TheoryData<int> CaseIndices()
    {
        var data = new TheoryData<int>();
        for (var i = 0; i < TinyGolden.Value.Cases.Length; i++) data.Add(i);
        return data;
    }

    [Fact]
    public void TinyVocabularyHasTheGoldenSpecialIds()
    {
        var golden = TinyGolden.Value;
        var tok = Tiny.Value;
        Assert.Equal(golden.BosId, tok.BosId);
        Assert.Equal(golden.EosId, tok.EosId);
        Assert.Equal(golden.PadId, tok.PadId);
        Assert.Equal(golden.VocabSize, tok.VocabSize);
        Assert.Equal(golden.MaxLength, tok.ModelMaxLength);
    }

    [Theory]
    [MemberData(nameof(CaseIndices))]
    public void TinyVocabularyMatchesEveryGoldenCase(int index) => AssertMatches(TinyGolden.Value.Cases[index], Tiny.Value);

    [Fact]
    public void SdxlTokenizersPadAsTheirGoldensSay()
    {
        // tokenizer_2's golden is tokenizer_golden.json's strings padded with "!" (id 0); the first tokenizer keeps 913.
        var golden2 = TinySdxlGolden2.Value;
        Assert.Equal(0, golden2.PadId);
        Assert.Equal(TinyGolden.Value.Cases.Select(c => c.Text), golden2.Cases.Select(c => c.Text));
        var (tokenizer, tokenizer2) = TinySdxlTokenizers.Value;
        Assert.Equal((golden2.BosId, golden2.EosId, golden2.PadId, golden2.VocabSize, golden2.MaxLength),
            (tokenizer2.BosId, tokenizer2.EosId, tokenizer2.PadId, tokenizer2.VocabSize, tokenizer2.ModelMaxLength));
        Assert.Equal(TinyGolden.Value.PadId, tokenizer.PadId);
        // Guards the theory below against a golden whose padding could not tell the two apart.
        Assert.Contains(golden2.Cases, c => c.InputIds77[^1] == 0 && !c.Truncated);
    }

    /// <summary>SDXL's tokenizer_2, as the loader reads it for the pipeline, on every case of its golden.</summary>
    [Theory]
    [MemberData(nameof(CaseIndices))]
    public void SdxlSecondTokenizerMatchesEveryGoldenCase(int index) => AssertMatches(TinySdxlGolden2.Value.Cases[index], TinySdxlTokenizers.Value.Tokenizer2);

    private static void AssertMatches(TokenizerGoldenCase c, ClipTokenizer tok)
    {
        Assert.Equal(c.BpeTokens, tok.Tokenize(c.Text));
        Assert.Equal(c.BpeIds, tok.Encode(c.Text));
        var padded = tok.PadForModel(tok.Encode(c.Text));
        Assert.Equal(c.InputIds77, padded.Ids);
        Assert.Equal(c.NumUnpadded, padded.NumUnpadded);
        Assert.Equal(c.Truncated, padded.Truncated);
        Assert.Equal(c.InputIds77, tok.EncodeForModel(c.Text));
    }

    [Fact]
    public void GoldenSetCoversTruncation()
    {
        // Guards the theory above against a fixture without the cases that exercise truncation.
        Assert.Contains(TinyGolden.Value.Cases, c => c.Truncated && c.InputIds77[^1] == TinyGolden.Value.EosId);
    }

    [Fact]
    public void TruncationKeepsTheEndToken()
    {
        var tok = Tiny.Value;
        var padded = tok.PadForModel(Enumerable.Range(100, 80).ToList());
        Assert.True(padded.Truncated);
        Assert.Equal(77, padded.NumUnpadded);
        Assert.Equal(tok.BosId, padded.Ids[0]);
        Assert.Equal(Enumerable.Range(100, 75), padded.Ids[1..76]);
        Assert.Equal(tok.EosId, padded.Ids[76]);

        var exact = tok.PadForModel(Enumerable.Range(100, 75).ToList());
        Assert.False(exact.Truncated);
        Assert.Equal(tok.EosId, exact.Ids[76]);
    }

    [Fact]
    public void DecodeReassemblesMultiByteCharactersAndEndsWordsWithSpaces()
    {
        var tok = Tiny.Value;
        Assert.Equal("café crème brûlée ", tok.Decode(tok.Encode("Café  Crème brûlée")));
        Assert.Equal("<|startoftext|>a photo <|endoftext|>", tok.Decode(tok.EncodeForModel("a photo")[..4]));
        Assert.Equal("a photo ", tok.Decode(tok.EncodeForModel("a photo"), skipSpecialTokens: true));
    }

    [Fact]
    public void PadTokenComesFromSpecialTokensMapOrOptions()
    {
        var dir = Directory.CreateTempSubdirectory("sdapp-tok-");
        try
        {
            File.Copy(Path.Combine(TinyTokenizerFolder, "vocab.json"), Path.Combine(dir.FullName, "vocab.json"));
            File.Copy(Path.Combine(TinyTokenizerFolder, "merges.txt"), Path.Combine(dir.FullName, "merges.txt"));
            // No special-token files: SD 1.x behaviour, padding with the end token.
            Assert.Equal(913, ClipTokenizer.FromFolder(dir.FullName).PadId);

            // SD 2.x writes pad_token "!", here in the AddedToken object form.
            File.WriteAllText(Path.Combine(dir.FullName, "special_tokens_map.json"),
                """{"bos_token": "<|startoftext|>", "pad_token": {"content": "!", "lstrip": false}}""");
            var sd2 = ClipTokenizer.FromFolder(dir.FullName);
            Assert.Equal(0, sd2.PadId);
            var ids = sd2.EncodeForModel("a red circle");
            Assert.Equal([912, 320, 552, 620, 913, 0], ids[..6]);
            Assert.All(ids[5..], id => Assert.Equal(0, id));

            // Padding goes, the text's own "!" (id 0 too) stays.
            Assert.Equal("red !!! ", sd2.Decode(sd2.EncodeForModel("red !!!"), skipSpecialTokens: true));

            Assert.Equal(913, ClipTokenizer.FromFolder(dir.FullName, new ClipTokenizerOptions(PadTokenId: 913)).PadId);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void UnknownSpecialTokenIsReported()
    {
        var ex = Assert.Throws<UserInputException>(() =>
            ClipTokenizer.FromFolder(TinyTokenizerFolder, new ClipTokenizerOptions(PadToken: "<pad>")));
        Assert.Contains("<pad>", ex.Message);
    }

    [Fact]
    public void MalformedMergeLineNamesFileAndLine()
    {
        var path = Path.GetTempFileName();
        try
        {
            File.WriteAllLines(path, ["#version: 0.2", "a b", "abc"]);
            var ex = Assert.Throws<UserInputException>(() => ClipTokenizer.ReadMerges(path));
            Assert.Contains($"{path}:3", ex.Message);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData("\u039F\u0394\u039F\u03A3", "\u03BF\u03B4\u03BF\u03C2")] // ΟΔΟΣ: final sigma ends the word
    [InlineData("\u03A3\u039F\u03A6 \u039F\u03A3.", "\u03C3\u03BF\u03C6 \u03BF\u03C2.")] // not final at a word start; '.' is case-ignorable
    [InlineData("\u039F\u03A3.\u0391", "\u03BF\u03C3.\u03B1")] // a letter after the '.' makes it medial
    [InlineData("İstanbul", "i\u0307stanbul")] // full case mapping of the dotted capital I
    [InlineData("ÀÉÎ", "àéî")]
    public void LowerCasingFollowsPython(string text, string expected)
    {
        Assert.Equal(expected, TokenizationInternals.PythonLower(text));
    }

    [Fact]
    public void LettersOutsideTheBasicPlaneStayOneWord()
    {
        // U+1D400 MATHEMATICAL BOLD CAPITAL A is a letter (\p{L}) made of two UTF-16 surrogates; it must join
        // the following letters into one piece, as the reference's code-point regex does.
        var pieces = TokenizationInternals.Split("\U0001D400bc d1");
        Assert.Equal(["\U0001D400bc", "d", "1"], pieces);
    }
}

internal static class TokenizationInternals
{
    public static string PythonLower(string text) => ClipTextNormalizer.PythonLower(text);

    public static string[] Split(string text) =>
        ClipPreTokenizer.Split(text, [ClipTokenizer.DefaultBosToken, ClipTokenizer.DefaultEosToken])
            .Select(p => p.Text).ToArray();
}
