using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Diffusion.Prompts;
using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Formats.Pickle;
using SdAppliance.Models.Adapters;
using SdAppliance.Models.Loading;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using SdAppliance.Training.Exports;
using SdAppliance.Training.Networks;
using static SdAppliance.Training.Tests.LoraTestSupport;

namespace SdAppliance.Training.Tests;

/// <summary>
/// Textual inversion's trainable vectors: A1111's initialisation from the initializer word, gradients
/// through the prompt path's token overrides, and the three export layouts read back by our loader
/// and used by generation.
/// </summary>
[Collection(TinySdxlCollection.Name)]
public sealed class EmbeddingTests : IDisposable
{
    private readonly string folder = Directory.CreateTempSubdirectory("sdapp-ti-").FullName;
    private readonly StableDiffusionModel model = LoadTiny();

    public void Dispose()
    {
        model.Dispose();
        Directory.Delete(folder, recursive: true);
    }

    private float[] TokenRow(StableDiffusionModel m, string word, bool second = false)
    {
        var id = Assert.Single((second ? m.Tokenizer2! : m.Tokenizer).Encode(word));
        var table = (second ? m.TextEncoder2! : m.TextEncoder).TextModel.Embeddings.TokenEmbedding.Weight;
        using var row = table.Narrow(0, id, 1);
        return row.ToArray<float>();
    }

    [Fact]
    public void VectorsStartFromTheInitializerTokensSpreadAsA1111Does()
    {
        using var embedding = TrainableEmbedding.Create(model, "zwx", "red circle", 4);
        Assert.Equal([4L, 32], embedding.Vectors.Shape);
        Assert.True(embedding.Vectors.RequiresGrad);
        Assert.True(embedding.Vectors.IsLeaf);
        Assert.Equal(DType.Float32, embedding.Vectors.DType);
        Assert.Null(embedding.Vectors2);
        // vector i is token ⌊i·2/4⌋: red, red, circle, circle.
        float[] expected = [.. TokenRow(model, "red"), .. TokenRow(model, "red"), .. TokenRow(model, "circle"), .. TokenRow(model, "circle")];
        Assert.Equal(expected, embedding.Vectors.ToArray<float>());

        using var truncated = TrainableEmbedding.Create(model, "zwx", "a red circle", 1);
        Assert.Equal(TokenRow(model, "a"), truncated.Vectors.ToArray<float>());
        using var zeros = TrainableEmbedding.Create(model, "zwx", "", 3);
        Assert.All(zeros.Vectors.ToArray<float>(), v => Assert.Equal(0f, v));
        // The vectors are their own storage: changing them leaves the model's table alone.
        var before = TokenRow(model, "red");
        using (Autograd.NoGrad()) embedding.Vectors.Fill_(5);
        Assert.Equal(before, TokenRow(model, "red"));
    }

    [Fact]
    public void BadArgumentsAreRefusedNamingThem()
    {
        Assert.Equal("numVectors", Assert.Throws<ArgumentOutOfRangeException>(() => TrainableEmbedding.Create(model, "zwx", "red", 0)).ParamName);
        Assert.Equal("numVectors", Assert.Throws<ArgumentOutOfRangeException>(() => TrainableEmbedding.Create(model, "zwx", "red", 76)).ParamName);
        Assert.Equal("placeholderToken", Assert.Throws<ArgumentException>(() => TrainableEmbedding.Create(model, " ", "red", 1)).ParamName);
    }

    [Fact]
    public void GradientsReachTheVectorsThroughThePromptPathAndNothingElse()
    {
        using var embedding = TrainableEmbedding.Create(model, "zwx", "red", 2);
        model.TextEncoder.Freeze();
        try
        {
            using var library = new EmbeddingLibrary(model.Tokenizer);
            library.Add(embedding.AsEmbedding());
            var chunk = Assert.Single(new PromptChunker(model.Tokenizer, library).Chunk("a photo of zwx").Chunks);
            var fix = Assert.Single(chunk.Fixes);
            var e = library.Embeddings[fix.Embedding.Name];
            var prompt = new PromptChunks([chunk.Ids], [[.. chunk.Weights.Select(w => (float)w)]])
            {
                Embeddings = [new ChunkEmbedding(0, fix.Offset, e.Vectors, e.Vectors2)],
            };
            using var conditioning = model.PromptEncoder.Encode(prompt);
            using var loss = conditioning.PromptEmbeds.Square().Sum();
            loss.Backward();
            using var grad = embedding.Vectors.Grad;
            Assert.NotNull(grad);
            Assert.True(grad!.Abs().Sum().Item() > 0);
            Assert.Null(model.TextEncoder.TextModel.Embeddings.TokenEmbedding.Weight.Grad);
        }
        finally
        {
            model.TextEncoder.Unfreeze();
        }
        // The library disposed its embedding object; the trainable vectors live on.
        Assert.False(embedding.Vectors.IsDisposed);
        Assert.Equal([2L, 32], embedding.Vectors.Shape);
    }

    public static TheoryData<string> Layouts => ["a1111.safetensors", "a1111.pt", "diffusers.safetensors"];

    private static void Export(string layout, string path, TrainableEmbedding embedding)
    {
        switch (layout)
        {
            case "a1111.safetensors": EmbeddingExport.SaveA1111Safetensors(path, embedding); break;
            case "a1111.pt": EmbeddingExport.SaveA1111Pt(path, embedding, 500, "0123456789", "tiny-sd"); break;
            default: EmbeddingExport.SaveDiffusers(path, embedding); break;
        }
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void EachLayoutLoadsBackAndGeneratesAsTheInitializerWord(string layout)
    {
        // One vector initialised from "red": "a zwx circle" must then be "a red circle".
        using var embedding = TrainableEmbedding.Create(model, "zwx", "red", 1);
        var embeddings = Path.Combine(folder, "embeddings");
        Directory.CreateDirectory(embeddings);
        var file = Path.Combine(embeddings, "zwx" + Path.GetExtension(layout));
        Export(layout, file, embedding);

        using (var loaded = TextualInversionEmbedding.Load(file))
        {
            Assert.Equal("zwx", loaded.Name);
            Assert.Equal(embedding.Vectors.ToArray<float>(), loaded.Vectors.ToArray<float>());
            Assert.Null(loaded.Vectors2);
        }
        Assert.Equal(Generate(model, "a red circle"), Generate(model, "a zwx circle", folders: new AdapterFolders([], [embeddings])));
    }

    [Fact]
    public void FilesHoldTheKeysOtherToolsRead()
    {
        using var embedding = TrainableEmbedding.Create(model, "zwx", "red circle", 2);
        var st = Path.Combine(folder, "zwx.safetensors");
        EmbeddingExport.SaveA1111Safetensors(st, embedding);
        using (var file = SafetensorsFile.Open(st))
            Assert.Equal(["emb_params"], file.Names);

        var diffusers = Path.Combine(folder, "learned_embeds.safetensors");
        EmbeddingExport.SaveDiffusers(diffusers, embedding);
        using (var file = SafetensorsFile.Open(diffusers))
        {
            Assert.Equal(["zwx"], file.Names);
            Assert.Equal("pt", file.Metadata["format"]);
        }

        var pt = Path.Combine(folder, "zwx.pt");
        EmbeddingExport.SaveA1111Pt(pt, embedding, 1500, "abcdef0123", "tiny-sd");
        using var checkpoint = TorchCheckpoint.Open(pt);
        var root = Assert.IsType<PickleDict>(checkpoint.Root);
        Assert.Equal(new object?[] { "string_to_token", "string_to_param", "name", "step", "sd_checkpoint", "sd_checkpoint_name" }, root.Keys.ToArray());
        Assert.Equal(265L, Assert.IsType<PickleDict>(root["string_to_token"])["*"]);
        var vectors = Assert.IsType<TorchTensor>(Assert.IsType<PickleDict>(root["string_to_param"])["*"]);
        Assert.Equal([2L, 32], vectors.Shape);
        Assert.Equal(embedding.Vectors.ToBytes(), vectors.ReadBytes());
        Assert.Equal(("zwx", 1500L, "abcdef0123", "tiny-sd"), ((string)root["name"]!, (long)root["step"]!, (string)root["sd_checkpoint"]!, (string)root["sd_checkpoint_name"]!));
    }

    [Fact]
    public void SdxlEmbeddingsCarryBothEncoders()
    {
        var sdxl = Path.Combine(folder, "sdxl");
        WriteTinySdxl(sdxl);
        using var xl = ModelLoader.Load(sdxl);
        using var embedding = TrainableEmbedding.Create(xl, "zwx", "red", 2);
        Assert.NotNull(embedding.Vectors2);
        Assert.True(embedding.Vectors2!.RequiresGrad);
        // Each encoder starts from its own token table.
        Assert.Equal([.. TokenRow(xl, "red", second: true), .. TokenRow(xl, "red", second: true)], embedding.Vectors2.ToArray<float>());
        Assert.NotEqual(embedding.Vectors.ToArray<float>(), embedding.Vectors2.ToArray<float>());

        foreach (var name in new[] { "a.safetensors", "a.pt" })
        {
            var file = Path.Combine(folder, name);
            if (name.EndsWith(".pt", StringComparison.Ordinal)) EmbeddingExport.SaveA1111Pt(file, embedding, 1, null, null);
            else EmbeddingExport.SaveA1111Safetensors(file, embedding);
            using var loaded = TextualInversionEmbedding.Load(file);
            Assert.Equal(embedding.Vectors.ToArray<float>(), loaded.Vectors.ToArray<float>());
            Assert.Equal(embedding.Vectors2.ToArray<float>(), loaded.Vectors2!.ToArray<float>());
        }

        var diffusers = Path.Combine(folder, "learned_embeds.safetensors");
        EmbeddingExport.SaveDiffusers(diffusers, embedding);
        using (var first = TextualInversionEmbedding.Load(diffusers))
            Assert.Equal(embedding.Vectors.ToArray<float>(), first.Vectors.ToArray<float>());
        using (var second = TextualInversionEmbedding.Load(Path.Combine(folder, "learned_embeds_2.safetensors")))
            Assert.Equal(embedding.Vectors2.ToArray<float>(), second.Vectors.ToArray<float>());
    }
}
