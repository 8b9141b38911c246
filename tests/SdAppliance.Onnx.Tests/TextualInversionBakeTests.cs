using System.Text.Json.Nodes;
using SdAppliance.Diffusion.Prompts;
using SdAppliance.Formats;
using SdAppliance.Models.Adapters;
using SdAppliance.Models.Loading;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Tokenization;
using SdAppliance.Onnx.Export;
using SdAppliance.Torch;

namespace SdAppliance.Onnx.Tests;

/// <summary>
/// Textual inversion baked into an export (<see cref="TextualInversionBake"/>): the tokenizer's added tokens (matching,
/// multi-vector expansion, the folder written and read back), and a prompt with the embedding's name through the ONNX
/// text encoder equal (1e-4) to our libtorch encoder with the embedding applied the usual way (token overrides).
/// </summary>
public sealed class TextualInversionBakeTests : IDisposable
{
    private const double Tolerance = 1e-4;
    private static readonly string TinySd = Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sd");
    private static readonly string TinyTokenizer = Path.Combine(TinySd, "tokenizer");
    private readonly string folder = Directory.CreateTempSubdirectory("sdapp-onnx-ti-").FullName;

    public void Dispose() => Directory.Delete(folder, recursive: true);

    private static readonly string[] Prompts =
    [
        "a photo of an astronaut riding a horse, 4k",
        "zwx in the style of easystyle",
        "ZWX, zwxy and easystyle's zwx_1 &amp; <|endoftext|> (zwx:1.2)",
        "",
    ];

    [Fact]
    public void AddedTokensAreOneIdEachAndWholeWords()
    {
        var plain = ClipTokenizer.FromFolder(TinyTokenizer);
        var first = plain.NextFreeId;
        var tokenizer = plain.WithAddedTokens([new ClipAddedToken("zwx", first), new ClipAddedToken("zwx_1", first + 1), new ClipAddedToken("zwx_2", first + 2),
            new ClipAddedToken("<Toy>", first + 3, SingleWord: false)]);

        Assert.True(tokenizer.HasAddedToken("ZWX"));
        Assert.False(plain.HasAddedToken("zwx"));
        // The name expands to every vector's token, as diffusers' maybe_convert_prompt; a suffixed token alone is itself.
        Assert.Equal([.. plain.Encode("a photo of"), first, first + 1, first + 2], tokenizer.Encode("a photo of ZWX"));
        Assert.Equal([first + 1], tokenizer.Encode("zwx_1"));
        // Whole words only: "zwxy" is BPE text; punctuation is a boundary.
        Assert.Equal(plain.Encode("zwxy"), tokenizer.Encode("zwxy"));
        Assert.Equal([first, first + 1, first + 2, .. plain.Encode(",")], tokenizer.Encode("zwx,"));
        // A token added without single_word (transformers' add_tokens default) matches inside words too.
        Assert.Equal([.. plain.Encode("my"), first + 3, .. plain.Encode("s")], tokenizer.Encode("my<toy>s"));
        Assert.Equal("a zwx zwx_1 zwx_2 ", tokenizer.Decode(tokenizer.Encode("a zwx")));
    }

    [Fact]
    public void PromptChunkerMapsTheNameToItsBakedIds()
    {
        var plain = ClipTokenizer.FromFolder(TinyTokenizer);
        var baked = plain.WithAddedTokens([new ClipAddedToken("zwx", plain.NextFreeId)]);
        var chunk = new PromptChunker(baked).Chunk("a (zwx:1.3) cat").Chunks.Single();
        var position = 1 + plain.Encode("a").Count;
        Assert.Equal(plain.NextFreeId, chunk.Ids[position]);
        Assert.Equal(1.3, chunk.Weights[position], 12);
        Assert.Empty(chunk.Fixes);
    }

    [Fact]
    public void TokenizerFolderRoundTrips()
    {
        var original = ClipTokenizer.FromFolder(TinyTokenizer, new ClipTokenizerOptions(PadToken: "!"));
        var id = original.NextFreeId;
        var tokenizer = original.WithAddedTokens([new ClipAddedToken("zwx", id), new ClipAddedToken("zwx_1", id + 1), new ClipAddedToken("easystyle", id + 2),
            new ClipAddedToken("<toy>", id + 3, SingleWord: false)]);
        var written = Path.Combine(folder, "tokenizer");
        tokenizer.SaveToFolder(written);

        Assert.Equal(["added_tokens.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"],
            Directory.GetFiles(written).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        var added = JsonFiles.ReadObject(Path.Combine(written, "added_tokens.json"));
        Assert.Equal(id + 2, (int)added["easystyle"]!);
        var config = JsonFiles.ReadObject(Path.Combine(written, "tokenizer_config.json"));
        Assert.Equal("zwx_1", (string)config["added_tokens_decoder"]![(id + 1).ToString(System.Globalization.CultureInfo.InvariantCulture)]!["content"]!);
        Assert.Equal("!", (string)config["pad_token"]!);

        var read = ClipTokenizer.FromFolder(written);
        Assert.Equal(tokenizer.AddedTokens, read.AddedTokens);
        Assert.Equal((tokenizer.BosId, tokenizer.EosId, tokenizer.PadId, tokenizer.VocabSize, tokenizer.ModelMaxLength),
            (read.BosId, read.EosId, read.PadId, read.VocabSize, read.ModelMaxLength));
        foreach (var prompt in Prompts)
            Assert.Equal(tokenizer.EncodeForModel(prompt), read.EncodeForModel(prompt));
        // Without added tokens the written folder tokenizes as the fixture's.
        var plainWritten = Path.Combine(folder, "plain");
        original.SaveToFolder(plainWritten);
        foreach (var prompt in Prompts)
            Assert.Equal(original.EncodeForModel(prompt), ClipTokenizer.FromFolder(plainWritten).EncodeForModel(prompt));
    }

    [Fact]
    public void TinyFixtureWithBakedEmbeddingsMatchesTokenOverrides()
    {
        using var model = ModelLoader.Load(TinySd);
        using var scope = torch.NewDisposeScope();
        using var g = new Generator(21);
        var width = model.TextEncoder.Config.HiddenSize;
        using var zwx = new TextualInversionEmbedding("zwx", torch.Randn([3, width], g));
        using var style = new TextualInversionEmbedding("EasyStyle", torch.Randn([1, width], g));
        using var weights = model.TextEncoder.StateDict();
        using var baked = TextualInversionBake.Bake(model.Tokenizer, weights, [zwx, style]);
        Assert.Equal(["zwx", "zwx_1", "zwx_2", "easystyle"], baked.Tokens.Select(t => t.Content));
        Assert.Equal(model.TextEncoder.Config.VocabSize + 4, baked.TokenEmbedding.Size(0));

        var path = ExportRuns.SaveChecked(ClipTextEncoderOnnx.Build(model.TextEncoder, new OnnxExportOptions(), baked.WeightOverrides), folder, "text_encoder");
        AssertBakedMatchesOverrides(path, model.Tokenizer, baked.Tokenizer, model.TextEncoder, [zwx, style], TextualInversionVectors.First,
            "a photo of zwx riding a horse in the style of (easystyle:1.2)");
        // At the end of a full chunk the three vectors move to the next chunk together, as a loaded embedding's do.
        AssertBakedMatchesOverrides(path, model.Tokenizer, baked.Tokenizer, model.TextEncoder, [zwx, style], TextualInversionVectors.First,
            string.Join(" ", Enumerable.Repeat("a", 73)) + " zwx and easystyle");
    }

    [Fact]
    public void SdxlPairWithBakedEmbeddingsMatchesTokenOverrides()
    {
        using var clipL = TextEncoderExportTests.RandomEncoder(TextEncoderExportTests.SdxlClipL, withProjection: false, seed: 31);
        using var clipG = TextEncoderExportTests.RandomEncoder(TextEncoderExportTests.SdxlClipG, withProjection: true, seed: 32);
        var tokenizer = ClipTokenizer.FromFolder(TinyTokenizer);
        var tokenizer2 = ClipTokenizer.FromFolder(TinyTokenizer, new ClipTokenizerOptions(PadToken: "!"));
        using var scope = torch.NewDisposeScope();
        using var g = new Generator(22);
        using var zwx = new TextualInversionEmbedding("zwx", torch.Randn([2, clipL.Config.HiddenSize], g), torch.Randn([2, clipG.Config.HiddenSize], g));
        const string prompt = "zwx, a lighthouse at dusk";

        foreach (var (encoder, tok, which, name) in new[] { (clipL, tokenizer, TextualInversionVectors.First, "text_encoder"), (clipG, tokenizer2, TextualInversionVectors.Second, "text_encoder_2") })
        {
            using var weights = encoder.StateDict();
            using var baked = TextualInversionBake.Bake(tok, weights, [zwx], which);
            var path = ExportRuns.SaveChecked(ClipTextEncoderOnnx.Build(encoder, new OnnxExportOptions(), baked.WeightOverrides), folder, name);
            // The legacy configs pool at the argmax of the ids; the baked ids are the largest, and must not win.
            AssertBakedMatchesOverrides(path, tok, baked.Tokenizer, encoder, [zwx], which, prompt);
        }
    }

    [Fact]
    public void EmbeddingsThatDoNotFitAreRefusedNamingThem()
    {
        using var encoder = TextEncoderExportTests.RandomEncoder(TextEncoderExportTests.SdxlClipL, withProjection: false, seed: 1);
        using var weights = encoder.StateDict();
        var tokenizer = ClipTokenizer.FromFolder(TinyTokenizer);
        using var wide = new TextualInversionEmbedding("wide", torch.Zeros([1, 48]));
        using var single = new TextualInversionEmbedding("single", torch.Zeros([1, 32]));
        using var again = new TextualInversionEmbedding("SINGLE", torch.Zeros([1, 32]));

        var e = Assert.ThrowsAny<UserInputException>(() => TextualInversionBake.Bake(tokenizer, weights, [wide]));
        Assert.Contains("wide", e.ToString(), StringComparison.Ordinal);
        Assert.Contains("48", e.Message, StringComparison.Ordinal);
        e = Assert.ThrowsAny<UserInputException>(() => TextualInversionBake.Bake(tokenizer, weights, [single], TextualInversionVectors.Second));
        Assert.Contains("clip_g", e.Message, StringComparison.Ordinal);
        e = Assert.ThrowsAny<UserInputException>(() => TextualInversionBake.Bake(tokenizer, weights, [single, again]));
        Assert.Contains("twice", e.Message, StringComparison.Ordinal);
        // "a" is a piece of the vocabulary: transformers would read the word as that piece, never as the added row.
        using var piece = new TextualInversionEmbedding("a", torch.Zeros([1, 32]));
        e = Assert.ThrowsAny<UserInputException>(() => TextualInversionBake.Bake(tokenizer, weights, [piece]));
        Assert.Contains("already a token of the vocabulary", e.Message, StringComparison.Ordinal);
    }

    /// <summary>
    /// The prompt chunked as the libtorch pipeline does (embedding placeholders and token overrides) and as the export's
    /// tokenizer does (baked ids): the same chunks, the ids agree outside the embeddings, the baked ids sit where the
    /// overrides go, and every output of the ONNX run (all chunks as one batch) is within 1e-4 of libtorch's.
    /// </summary>
    private static void AssertBakedMatchesOverrides(string path, ClipTokenizer tokenizer, ClipTokenizer baked, ClipTextModel encoder,
        IReadOnlyList<TextualInversionEmbedding> embeddings, TextualInversionVectors which, string prompt)
    {
        using var library = new EmbeddingLibrary(tokenizer);
        foreach (var e in embeddings) library.Add(e, owns: false);
        var reference = new PromptChunker(tokenizer, library).Chunk(prompt).Chunks;
        var exported = new PromptChunker(baked).Chunk(prompt).Chunks;
        Assert.Equal(reference.Count, exported.Count);
        Assert.NotEmpty(reference.SelectMany(c => c.Fixes));

        var overrides = new List<TokenOverride>();
        for (var c = 0; c < reference.Count; c++)
        {
            Assert.Equal(reference[c].Weights, exported[c].Weights);
            var placed = new HashSet<int>();
            foreach (var fix in reference[c].Fixes)
            {
                var embedding = library.Embeddings[fix.Embedding.Name];
                var vectors = which == TextualInversionVectors.First ? embedding.Vectors : embedding.Vectors2!;
                overrides.Add(new TokenOverride(c, fix.Offset, vectors));
                var first = baked.TokenToId(embedding.Name.ToLowerInvariant())!.Value;
                for (var k = 0; k < vectors.Size(0); k++)
                {
                    Assert.Equal(first + k, exported[c].Ids[fix.Offset + k]);
                    placed.Add(fix.Offset + k);
                }
            }
            for (var i = 0; i < reference[c].Ids.Length; i++)
                if (!placed.Contains(i)) Assert.Equal(reference[c].Ids[i], exported[c].Ids[i]);
        }

        using var scope = torch.NewDisposeScope();
        Tensor Ids(IReadOnlyList<PromptChunk> chunks) => torch.Tensor(chunks.SelectMany(c => c.Ids).Select(i => (long)i).ToArray(), chunks.Count, chunks[0].Ids.Length);
        using var expected = encoder.Forward(Ids(reference), tokenOverrides: overrides);
        TextEncoderExportTests.AssertMatches(ExportRuns.Run(path, ("input_ids", Ids(exported))), encoder, expected, Tolerance);
    }
}
