using System.Text.Json;
using SdAppliance.Diffusion.Prompts;
using SdAppliance.Models.Tokenization;

namespace SdAppliance.Diffusion.Tests;

public class PromptChunkerTests
{
    private static readonly string TokenizerFolder = Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sd", "tokenizer");
    private static readonly Lazy<ClipTokenizer> Tiny = new(() => ClipTokenizer.FromFolder(TokenizerFolder));

    // Ids in the tiny fixture vocabulary (tokenizer_golden.json).
    private const int Bos = 912, Eos = 913, A = 320, Comma = 267, Red = 552, Circle = 620, Blue = 553;

    private static string Repeat(string word, int count) => string.Join(" ", Enumerable.Repeat(word, count));

    private static int[] Ids(params (int Id, int Count)[] runs) => runs.SelectMany(r => Enumerable.Repeat(r.Id, r.Count)).ToArray();

    private static void AssertChunk(PromptChunk chunk, int[] body)
    {
        Assert.Equal(77, chunk.Ids.Length);
        Assert.Equal(77, chunk.Weights.Length);
        Assert.Equal([Bos, .. body, .. Enumerable.Repeat(Eos, 76 - body.Length)], chunk.Ids);
    }

    [Fact]
    public void ShortUnweightedPromptsGiveTheTokenizersModelInput()
    {
        // Without emphasis syntax one chunk is exactly what an SD 1.x pipeline feeds the encoder (golden ids).
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Fixtures", "tokenizer_golden.json")));
        var chunker = new PromptChunker(Tiny.Value);
        var checkedCases = 0;
        foreach (var c in doc.RootElement.GetProperty("cases").EnumerateArray())
        {
            var text = c.GetProperty("text").GetString()!;
            if (text.IndexOfAny(['(', ')', '[', ']', '\\']) >= 0 || text.Contains("BREAK") || c.GetProperty("truncated").GetBoolean())
                continue;
            var chunks = chunker.Chunk(text);
            var chunk = Assert.Single(chunks.Chunks);
            Assert.Equal(c.GetProperty("input_ids_77").EnumerateArray().Select(e => e.GetInt32()), chunk.Ids);
            Assert.All(chunk.Weights, w => Assert.Equal(1.0, w));
            Assert.Equal(c.GetProperty("num_unpadded").GetInt32() - 2, chunks.TokenCount);
            checkedCases++;
        }
        Assert.True(checkedCases >= 30, $"only {checkedCases} golden cases qualified");
    }

    [Fact]
    public void EmptyPromptGivesOneEmptyChunk()
    {
        var chunker = new PromptChunker(Tiny.Value);
        var result = chunker.Chunk("");
        var chunk = Assert.Single(result.Chunks);
        AssertChunk(chunk, []);
        Assert.All(chunk.Weights, w => Assert.Equal(1.0, w));
        Assert.Equal(0, result.TokenCount);
        Assert.Equal(chunker.EmptyChunk().Ids, chunk.Ids);
    }

    [Fact]
    public void LongPromptIsSplitIntoChunksOf75()
    {
        var result = new PromptChunker(Tiny.Value).Chunk(Repeat("a", 80));
        Assert.Equal(2, result.Chunks.Count);
        AssertChunk(result.Chunks[0], Ids((A, 75)));
        AssertChunk(result.Chunks[1], Ids((A, 5)));
        Assert.Equal(80, result.TokenCount);
    }

    [Fact]
    public void ExactlyFullChunkDoesNotStartAnother()
    {
        var result = new PromptChunker(Tiny.Value).Chunk(Repeat("a", 75));
        AssertChunk(Assert.Single(result.Chunks), Ids((A, 75)));
        Assert.Equal(75, result.TokenCount);
    }

    [Fact]
    public void OverflowBacktracksToARecentComma()
    {
        // 70 words, a comma (position 70), 10 more: when the 76th token arrives the comma is 5 from the end,
        // within 20, so the chunk ends after the comma and the 4 words behind it move on.
        var result = new PromptChunker(Tiny.Value).Chunk(Repeat("a", 70) + ", " + Repeat("red", 10));
        Assert.Equal(2, result.Chunks.Count);
        AssertChunk(result.Chunks[0], Ids((A, 70), (Comma, 1)));
        AssertChunk(result.Chunks[1], Ids((Red, 10)));
        Assert.Equal(75 + 10, result.TokenCount);
    }

    [Fact]
    public void CommaFurtherBackThanTheLimitIsIgnored()
    {
        // The comma sits 25 tokens before the end of the full chunk: more than 20, so a plain cut.
        var prompt = Repeat("a", 50) + ", " + Repeat("red", 30);
        var result = new PromptChunker(Tiny.Value).Chunk(prompt);
        AssertChunk(result.Chunks[0], Ids((A, 50), (Comma, 1), (Red, 24)));
        AssertChunk(result.Chunks[1], Ids((Red, 6)));

        // With a backtrack of 25 it is within reach again; 0 disables the rule.
        var wide = new PromptChunker(Tiny.Value, commaPaddingBacktrack: 25).Chunk(prompt);
        AssertChunk(wide.Chunks[0], Ids((A, 50), (Comma, 1)));
        AssertChunk(wide.Chunks[1], Ids((Red, 30)));
        var off = new PromptChunker(Tiny.Value, commaPaddingBacktrack: 0).Chunk(Repeat("a", 70) + ", " + Repeat("red", 10));
        AssertChunk(off.Chunks[0], Ids((A, 70), (Comma, 1), (Red, 4)));
    }

    [Fact]
    public void BacktrackCarriesTheWeightsOfTheMovedTokens()
    {
        var result = new PromptChunker(Tiny.Value).Chunk(Repeat("a", 70) + ", (red:1.5) blue blue blue blue");
        AssertChunk(result.Chunks[0], Ids((A, 70), (Comma, 1)));
        AssertChunk(result.Chunks[1], Ids((Red, 1), (Blue, 4)));
        Assert.Equal([1.0, 1.5, 1.0, 1.0, 1.0, 1.0, 1.0], result.Chunks[1].Weights[..7]);
        Assert.All(result.Chunks[0].Weights, w => Assert.Equal(1.0, w));
    }

    [Fact]
    public void BreakStartsANewChunk()
    {
        var result = new PromptChunker(Tiny.Value).Chunk("a red BREAK circle");
        Assert.Equal(2, result.Chunks.Count);
        AssertChunk(result.Chunks[0], [A, Red]);
        AssertChunk(result.Chunks[1], [Circle]);
        // A1111 counts a chunk ended by BREAK as full.
        Assert.Equal(75 + 1, result.TokenCount);
    }

    [Fact]
    public void WeightsAlignWithTokens()
    {
        // "painted" is three tokens (pain, t, ed</w>): each carries the run's weight; bos, eos and padding are 1.
        var chunk = Assert.Single(new PromptChunker(Tiny.Value).Chunk("a (painted:1.2) [red] ((circle))").Chunks);
        AssertChunk(chunk, [A, 663, 83, 747, Red, Circle]);
        double[] expected = [1.0, 1.0, 1.2, 1.2, 1.2, 1 / 1.1, 1.1 * 1.1, .. Enumerable.Repeat(1.0, 70)];
        Assert.Equal(expected, chunk.Weights);
    }

    [Fact]
    public void Sd2PaddingReplacesEverythingAfterTheFirstEnd()
    {
        var sd2 = ClipTokenizer.FromFolder(TokenizerFolder, new ClipTokenizerOptions(PadToken: "!"));
        var chunk = Assert.Single(new PromptChunker(sd2).Chunk("a (red:1.3) circle").Chunks);
        Assert.Equal([Bos, A, Red, Circle, Eos, .. Enumerable.Repeat(0, 72)], chunk.Ids);
        Assert.Equal(sd2.EncodeForModel("a red circle"), chunk.Ids);
    }

    private sealed class FakeEmbeddings(int[] nameTokens, int vectors) : ITextualInversionLookup
    {
        public TextualInversionMatch? FindEmbeddingAtPosition(IReadOnlyList<int> tokens, int position) =>
            position + nameTokens.Length <= tokens.Count && nameTokens.Select((t, i) => tokens[position + i] == t).All(x => x)
                ? new TextualInversionMatch("myStyle", vectors, nameTokens.Length)
                : null;
    }

    [Fact]
    public void TextualInversionHookReplacesTheNameWithPlaceholderVectors()
    {
        // Pretend the embedding's name tokenizes as "red circle" and it has 3 vectors.
        var chunker = new PromptChunker(Tiny.Value, new FakeEmbeddings([Red, Circle], 3));
        var chunk = Assert.Single(chunker.Chunk("a (red circle:1.4) a").Chunks);
        AssertChunk(chunk, [A, 0, 0, 0, A]);
        Assert.Equal([1.0, 1.0, 1.4, 1.4, 1.4, 1.0], chunk.Weights[..6]);
        var fix = Assert.Single(chunk.Fixes);
        Assert.Equal((2, "myStyle", 3), (fix.Offset, fix.Embedding.Name, fix.Embedding.VectorCount));
    }

    [Fact]
    public void EmbeddingThatDoesNotFitMovesToTheNextChunk()
    {
        var chunker = new PromptChunker(Tiny.Value, new FakeEmbeddings([Red, Circle], 3));
        var result = chunker.Chunk(Repeat("a", 73) + " red circle");
        AssertChunk(result.Chunks[0], Ids((A, 73)));
        AssertChunk(result.Chunks[1], [0, 0, 0]);
        Assert.Empty(result.Chunks[0].Fixes);
        Assert.Equal(1, Assert.Single(result.Chunks[1].Fixes).Offset);
    }

    [Fact]
    public void EmbeddingMovedByCommaBacktrackKeepsItsFix()
    {
        var chunker = new PromptChunker(Tiny.Value, new FakeEmbeddings([Red, Circle], 2));
        // 70 a, comma at 70, the embedding's two placeholders at 71-72, then a's: the cut after the comma moves
        // the placeholders, and their fix with them.
        var result = chunker.Chunk(Repeat("a", 70) + ", red circle " + Repeat("a", 5));
        AssertChunk(result.Chunks[0], Ids((A, 70), (Comma, 1)));
        Assert.Empty(result.Chunks[0].Fixes);
        AssertChunk(result.Chunks[1], [0, 0, .. Ids((A, 5))]);
        Assert.Equal(1, Assert.Single(result.Chunks[1].Fixes).Offset);
    }

    [Theory]
    [InlineData(PromptChunker.MaxChunks + 1, 0)]
    [InlineData(2000, 0)]
    [InlineData(1, 75 * PromptChunker.MaxChunks + 1)]
    public void PromptOverTheChunkCapIsRefusedBeforeItIsEncoded(int breakSeparatedParts, int words)
    {
        // The campaign's caption of thousands of BREAKs (or of words) would cost a text-encoder pass and 77 keys per chunk.
        var prompt = words > 0 ? Repeat("a", words) : string.Join(" BREAK ", Enumerable.Repeat("a", breakSeparatedParts));
        var e = Assert.Throws<PromptTooLongException>(() => new PromptChunker(Tiny.Value).Chunk(prompt));
        Assert.IsAssignableFrom<SdAppliance.Formats.UserInputException>(e);
        Assert.Equal("prompt", e.Subject);
        Assert.Equal(PromptChunker.MaxChunks + 1, e.Chunks);
        Assert.Equal($"needs more than {PromptChunker.MaxChunks} chunks of 75 tokens (it reached {PromptChunker.MaxChunks + 1}, counting each BREAK as a new chunk)", e.Problem);
    }

    [Fact]
    public void PromptOfExactlyTheChunkCapIsChunked()
    {
        var result = new PromptChunker(Tiny.Value).Chunk(string.Join(" BREAK ", Enumerable.Repeat("a", PromptChunker.MaxChunks)));
        Assert.Equal(PromptChunker.MaxChunks, result.Chunks.Count);
        Assert.Equal(PromptChunker.MaxChunks, new PromptChunker(Tiny.Value).Chunk(Repeat("a", 75 * PromptChunker.MaxChunks)).Chunks.Count);
    }
}
