using SdAppliance.Models.TextEncoders;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using static SdAppliance.Models.Tests.TextEncoderFixtures;

namespace SdAppliance.Models.Tests;


/// <summary>A1111 emphasis, chunk concatenation and the SDXL front end, on the tiny encoder.</summary>
public sealed class TextEncoderPromptTests : IDisposable
{
    private readonly ClipTextModel model = LoadTiny();
    private readonly Tensor ids = Golden("input_ids");
    private readonly Tensor last = Golden("last_hidden_state");
    private readonly Tensor hidden = Golden("hidden_states");

    public void Dispose()
    {
        model.Dispose();
        ids.Dispose();
        last.Dispose();
        hidden.Dispose();
    }

    /// <summary>Emphasis on some tokens, attenuation on others, 1 elsewhere (as the parser would give for "(a:1.5) [b]").</summary>
    private static float[] Weights(int seed)
    {
        var w = Enumerable.Repeat(1f, 77).ToArray();
        for (var t = 1 + seed; t < 8 + seed; t++) w[t] = 1.5f;
        for (var t = 10 + seed; t < 14 + seed; t++) w[t] = 1 / 1.1f;
        return w;
    }

    private double[] GoldenRow(Tensor golden, int row)
    {
        using var r = golden.Narrow(0, row, 1);
        return Values(r);
    }

    [Fact]
    public void EmphasisScalesTokensAndRestoresTheMean()
    {
        var encoder = new ClipPromptEncoder(model);
        var weights = Weights(0);
        using var c = encoder.Encode(new PromptChunks([IdsRow(ids, 0)], [weights]));
        Assert.Equal([1L, 77, 32], c.PromptEmbeds.Shape);

        var z = GoldenRow(last, 0);
        // The reference applies the weights to the golden unweighted output in double precision.
        AssertClose(EmphasisReference(z, weights), c.PromptEmbeds, GoldenAtol, "weighted chunk");

        // The mean is restored: to float32 rounding of a 2464-value mean (~1e-6 of the values' scale).
        var got = Values(c.PromptEmbeds);
        var scale = z.Average(Math.Abs);
        Assert.True(Math.Abs(got.Average() - z.Average()) <= 1e-5 * scale, $"mean {got.Average():R} vs {z.Average():R}");
        // ... and the weights did change the conditioning: the emphasised tokens grew relative to the rest.
        var channels = 32;
        double Norm(double[] v, int token) => Math.Sqrt(Enumerable.Range(token * channels, channels).Sum(i => v[i] * v[i]));
        Assert.True(Norm(got, 3) / Norm(got, 30) > 1.4 * Norm(z, 3) / Norm(z, 30));
    }

    [Fact]
    public void UnitWeightsChangeNothing()
    {
        var encoder = new ClipPromptEncoder(model);
        using var c = encoder.Encode(new PromptChunks([IdsRow(ids, 2)], [Enumerable.Repeat(1f, 77).ToArray()]));
        using var expected = last.Narrow(0, 2, 1);
        AssertClose(expected, c.PromptEmbeds, GoldenAtol, "unit weights");
    }

    [Fact]
    public void ApplyEmphasisWorksPerChunk()
    {
        // Two chunks with very different values: each keeps its own mean (A1111 restores per chunk).
        using var a = torch.Full([1, 3, 2], 1.0);
        using var b = torch.Full([1, 3, 2], -4.0);
        using var z = torch.Cat([a, b]);
        using var w = torch.Tensor([2f, 1f, 1f, 1f, 1f, 3f], 2, 3);
        using var r = PromptEncoder.ApplyEmphasis(z, w);
        // Chunk 0: scaled [2,1,1] (mean 4/3) then × 1/(4/3); chunk 1: [-4,-4,-12] (mean -20/3) × (-4)/(-20/3).
        double[] expected = [1.5, 1.5, 0.75, 0.75, 0.75, 0.75, -2.4, -2.4, -2.4, -2.4, -7.2, -7.2];
        AssertClose(expected, r, 1e-6, "per-chunk emphasis");
    }

    [Fact]
    public void LongPromptsConcatenateIndependentlyEncodedChunks()
    {
        var encoder = new ClipPromptEncoder(model);
        var (w0, w1) = (Weights(0), Weights(5));
        var prompt = new PromptChunks([IdsRow(ids, 3), IdsRow(ids, 0)], [w0, w1]);
        using var c = encoder.Encode(prompt);
        Assert.Equal([1L, 154, 32], c.PromptEmbeds.Shape);
        double[] expected = [.. EmphasisReference(GoldenRow(last, 3), w0), .. EmphasisReference(GoldenRow(last, 0), w1)];
        AssertClose(expected, c.PromptEmbeds, GoldenAtol, "two chunks");
    }

    [Fact]
    public void ChunksMustAgreeInShape()
    {
        Assert.Throws<ArgumentException>(() => new PromptChunks([new int[77], new int[76]], [new float[77], new float[76]]));
        Assert.Throws<ArgumentException>(() => new PromptChunks([new int[77]], [new float[76]]));
        Assert.Throws<ArgumentException>(() => new PromptChunks([new int[77]], []));
        Assert.Throws<ArgumentException>(() => new PromptChunks([], []));
    }

    /// <summary>
    /// The SDXL front end with the tiny encoder in both places (the second with a projection,
    /// seeded): per chunk, hidden_states[-(n+1)] of each, emphasised separately, concatenated on
    /// the feature axis; pooled = projection of the first chunk's pooled output.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void SdxlConcatenatesPenultimateStatesAndPoolsTheFirstChunk(int clipSkip)
    {
        using var model2 = LoadTiny(withProjection: true);
        using (Autograd.NoGrad())
        using (var g = new Generator(7))
            Init.Normal_(model2.TextProjection!.Weight, 0, 0.2, g);
        var encoder = new SdxlPromptEncoder(model, model2);
        Assert.Equal(2, encoder.MaxClipSkip);
        var (w0, w1) = (Weights(0), Weights(3));
        var prompt = new PromptChunks([IdsRow(ids, 0), IdsRow(ids, 2)], [w0, w1]);
        using var c = encoder.Encode(prompt, clipSkip);
        Assert.Equal([1L, 154, 64], c.PromptEmbeds.Shape);

        // hidden_states[-(clipSkip + 1)] of 4, without the final layer norm.
        using var layerKept = hidden.Narrow(0, 3 - clipSkip, 1);
        using var layer = layerKept.Squeeze(0);
        var expected = new List<double>();
        foreach (var (row, w) in new[] { (0, w0), (2, w1) })
        {
            var part = EmphasisReference(GoldenRow(layer, row), w);
            for (var t = 0; t < 77; t++)
                for (var copy = 0; copy < 2; copy++)
                    expected.AddRange(part.AsSpan(t * 32, 32).ToArray());
        }
        AssertClose(expected, c.PromptEmbeds, GoldenAtol, $"SDXL prompt embeds, clip skip {clipSkip}");

        using var pooled = Golden("pooled");
        using var firstPooled = pooled.Narrow(0, 0, 1);
        using var expectedPooled = model2.TextProjection!.Forward(firstPooled);
        Assert.NotNull(c.PooledPromptEmbeds);
        AssertClose(expectedPooled, c.PooledPromptEmbeds!, GoldenAtol, "SDXL pooled");
    }

    [Fact]
    public void SdxlNeedsTheProjectionOnTheSecondEncoder()
    {
        Assert.Throws<ArgumentException>(() => new SdxlPromptEncoder(model, model));
    }
}
