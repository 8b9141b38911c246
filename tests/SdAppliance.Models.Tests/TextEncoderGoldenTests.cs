using SdAppliance.Models.TextEncoders;
using SdAppliance.Torch;
using static SdAppliance.Models.Tests.TextEncoderFixtures;

namespace SdAppliance.Models.Tests;


/// <summary>The tiny CLIP text encoder against the reference's outputs (fixtures README, "Text encoder").</summary>
public sealed class TextEncoderGoldenTests : IDisposable
{
    private readonly ClipTextModel model = LoadTiny();
    private readonly Tensor ids = Golden("input_ids");

    public void Dispose()
    {
        model.Dispose();
        ids.Dispose();
    }

    [Fact]
    public void ConfigJsonIsRead()
    {
        var c = model.Config;
        Assert.Equal((32, 64, 3, 4, 77), (c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads, c.MaxPositionEmbeddings));
        Assert.Equal(("quick_gelu", 1e-5, 914), (c.HiddenAct, c.LayerNormEps, c.VocabSize));
        Assert.Equal((912L, 913L, 913L), (c.BosTokenId, c.EosTokenId, c.PadTokenId));
    }

    [Fact]
    public void ForwardReproducesEveryGoldenOutput()
    {
        using var output = model.Forward(ids);
        using var last = Golden("last_hidden_state");
        using var hidden = Golden("hidden_states");
        using var penultimate = Golden("penultimate_hidden_state");
        using var penultimateLn = Golden("penultimate_final_ln");
        using var pooled = Golden("pooled");

        AssertClose(last, output.LastHiddenState, GoldenAtol, "last_hidden_state");
        Assert.Equal(4, output.HiddenStates.Count);
        using var stacked = torch.Stack([.. output.HiddenStates]);
        AssertClose(hidden, stacked, GoldenAtol, "hidden_states");
        AssertClose(penultimate, output.HiddenStates[^2], GoldenAtol, "penultimate_hidden_state");
        using var ourPenultimateLn = model.FinalLayerNorm.Forward(output.HiddenStates[^2]);
        AssertClose(penultimateLn, ourPenultimateLn, GoldenAtol, "penultimate_final_ln");
        AssertClose(pooled, output.PooledOutput, GoldenAtol, "pooled");
        Assert.Null(output.TextEmbeds);
    }

    [Fact]
    public void ForwardAndPromptEncodingLeaveNoIntermediateAlive()
    {
        using var projected = LoadTiny(withProjection: true);
        using var inference = Autograd.InferenceMode();
        using var scope = torch.NewDisposeScope();
        using (var output = projected.Forward(ids))
            Assert.NotNull(output.TextEmbeds);
        var prompt = new PromptChunks([IdsRow(ids, 0)], [[.. Enumerable.Repeat(1.2f, IdsRow(ids, 0).Length)]]);
        using (new ClipPromptEncoder(model).Encode(prompt, clipSkip: 2)) { }
        using (new SdxlPromptEncoder(model, projected).Encode(prompt)) { }
        Assert.Equal(0, scope.Count);
    }

    [Fact]
    public void WithoutHiddenStatesTheOutputsAreTheSame()
    {
        using var output = model.Forward(ids, outputHiddenStates: false);
        using var last = Golden("last_hidden_state");
        using var pooled = Golden("pooled");
        Assert.Empty(output.HiddenStates);
        AssertClose(last, output.LastHiddenState, GoldenAtol, "last_hidden_state");
        AssertClose(pooled, output.PooledOutput, GoldenAtol, "pooled");
    }

    [Fact]
    public void PooledPositionIsTheFirstEosUnderBothRules()
    {
        // The fixture config has eos 913 (the "first id equal to eos" rule); the same config with
        // the released files' legacy eos 2 takes the argmax. 913 is the largest id, so both must
        // find the first <|endoftext|>, which the padded rows repeat.
        var expected = Enumerable.Range(0, 4).Select(r => (long)Array.IndexOf(IdsRow(ids, r), 913)).ToArray();
        Assert.All(expected, p => Assert.True(p > 0));
        Assert.Contains(expected, p => p < 76);  // some row is padded, so "first" matters
        using var byEquality = model.EosPositions(ids);
        Assert.Equal(expected, byEquality.ToArray<long>());

        using var legacy = new ClipTextModel(model.Config with { EosTokenId = 2 });
        using var byArgmax = legacy.EosPositions(ids);
        Assert.Equal(expected, byArgmax.ToArray<long>());
    }

    [Fact]
    public void ClipSkipOneIsLastHiddenStateAndTwoIsPenultimateWithFinalLayerNorm()
    {
        var encoder = new ClipPromptEncoder(model);
        using var last = Golden("last_hidden_state");
        using var penultimateLn = Golden("penultimate_final_ln");
        for (var row = 0; row < 4; row++)
        {
            var prompt = PromptChunks.Unweighted(IdsRow(ids, row));
            using var skip1 = encoder.Encode(prompt, clipSkip: 1);
            using var skip2 = encoder.Encode(prompt, clipSkip: 2);
            using var expected1 = last.Narrow(0, row, 1);
            using var expected2 = penultimateLn.Narrow(0, row, 1);
            AssertClose(expected1, skip1.PromptEmbeds, GoldenAtol, $"clip skip 1, prompt {row}");
            AssertClose(expected2, skip2.PromptEmbeds, GoldenAtol, $"clip skip 2, prompt {row}");
            Assert.Null(skip2.PooledPromptEmbeds);
        }
    }

    [Fact]
    public void ClipSkipNIsHiddenStateMinusNThroughFinalLayerNorm()
    {
        var encoder = new ClipPromptEncoder(model);
        Assert.Equal(3, encoder.MaxClipSkip);
        using var hidden = Golden("hidden_states");
        using var layer1Kept = hidden.Narrow(0, 1, 1);  // hidden_states[-3] of 4
        using var layer1 = layer1Kept.Squeeze(0);
        using var row = layer1.Narrow(0, 2, 1);
        using var expected = model.FinalLayerNorm.Forward(row);
        using var skip3 = encoder.Encode(PromptChunks.Unweighted(IdsRow(ids, 2)), clipSkip: 3);
        AssertClose(expected, skip3.PromptEmbeds, GoldenAtol, "clip skip 3");
        Assert.Throws<ArgumentOutOfRangeException>(() => encoder.Encode(PromptChunks.Unweighted(IdsRow(ids, 2)), clipSkip: 4));
        Assert.Throws<ArgumentOutOfRangeException>(() => encoder.Encode(PromptChunks.Unweighted(IdsRow(ids, 2)), clipSkip: 0));
    }

    [Fact]
    public void TooManyTokensAreRefused()
    {
        using var long78 = torch.Zeros([1, 78], DType.Int64);
        var e = Assert.Throws<ArgumentException>(() => model.Forward(long78));
        Assert.Contains("max_position_embeddings", e.Message);
    }
}
