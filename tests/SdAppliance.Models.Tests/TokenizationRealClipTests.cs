using SdAppliance.Models.Tokenization;
using static SdAppliance.Models.Tests.TokenizationFixtures;

namespace SdAppliance.Models.Tests;

/// <summary>The 40 golden strings again, with openai CLIP's real 49408-token vocabulary (read from the shared set).</summary>
public class TokenizationRealClipTests
{
    private static readonly Lazy<ClipTokenizer> Real = new(() => ClipTokenizer.FromFolder(SharedFixtureFolder(RealClip)!));

    [FactWhenFixtureExists(RealClip)]
    public void RealVocabularyMatchesEveryGoldenCase()
    {
        var golden = ReadGolden(Path.Combine(SharedFixtureFolder(RealClip)!, "tokenizer_golden_real_clip.json"));
        var tok = Real.Value;
        Assert.Equal((golden.BosId, golden.EosId, golden.PadId, golden.VocabSize), (tok.BosId, tok.EosId, tok.PadId, tok.VocabSize));
        Assert.Equal(40, golden.Cases.Length);

        var failures = new List<string>();
        foreach (var c in golden.Cases)
        {
            var padded = tok.PadForModel(tok.Encode(c.Text));
            if (!c.BpeTokens.SequenceEqual(tok.Tokenize(c.Text)) || !c.BpeIds.SequenceEqual(tok.Encode(c.Text))
                || !c.InputIds77.SequenceEqual(padded.Ids) || c.NumUnpadded != padded.NumUnpadded
                || c.Truncated != padded.Truncated)
                failures.Add($"'{c.Text}': expected [{string.Join(' ', c.BpeTokens)}], got [{string.Join(' ', tok.Tokenize(c.Text))}]");
        }
        Assert.True(failures.Count == 0, string.Join(Environment.NewLine, failures));
    }

    [FactWhenFixtureExists(RealClip)]
    public void OpenClipPadsWithExclamationMarkWhichIsIdZero()
    {
        // SD 2.x and SDXL's second tokenizer declare pad_token "!".
        var folder = SharedFixtureFolder(RealClip)!;
        var tok = ClipTokenizer.FromFolder(folder, new ClipTokenizerOptions(PadToken: "!"));
        Assert.Equal(0, tok.PadId);
        var ids = tok.EncodeForModel("a photo of a cat");
        Assert.Equal([49406, 320, 1125, 539, 320, 2368, 49407], ids[..7]);
        Assert.All(ids[7..], id => Assert.Equal(0, id));
    }
}
