using SdAppliance.Models.Loading;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Torch;

namespace SdAppliance.Diffusion.Prompts;

/// <summary>
/// Prompts to the UNet's text conditioning the A1111 way (emphasis, BREAK, 75-token chunks,
/// textual-inversion embeddings by name), for generation and for training alike. Prompts encoded
/// together get the same number of chunks (the shorter padded with empty chunks), so their
/// conditionings stack into one batch.
/// </summary>
public sealed class PromptConditioner(IDiffusionModel model, EmbeddingLibrary embeddings)
{
    public EmbeddingLibrary Embeddings => embeddings;

    /// <summary>One conditioning per prompt, all with the same sequence length.</summary>
    public IReadOnlyList<TextConditioning> Encode(IReadOnlyList<string> prompts, int clipSkip = 1)
    {
        var chunker = new PromptChunker(model.Tokenizer, embeddings);
        var chunked = prompts.Select(chunker.Chunk).ToList();
        var chunkCount = chunked.Max(c => c.Chunks.Count);
        return [.. prompts.Select((text, i) => Encode(chunker, chunked[i], chunkCount, clipSkip, text))];
    }

    /// <summary>The prompts' conditionings stacked on the batch axis (pooled too, for SDXL).</summary>
    public TextConditioning EncodeBatch(IReadOnlyList<string> prompts, int clipSkip = 1)
    {
        var each = Encode(prompts, clipSkip);
        try
        {
            if (each.Count == 1) return each[0];
            var embeds = torch.Cat([.. each.Select(c => c.PromptEmbeds)]);
            var pooled = each[0].PooledPromptEmbeds is null ? null : torch.Cat([.. each.Select(c => c.PooledPromptEmbeds!)]);
            foreach (var c in each) c.Dispose();
            return new TextConditioning(embeds, pooled);
        }
        catch
        {
            foreach (var c in each) c.Dispose();
            throw;
        }
    }

    private TextConditioning Encode(PromptChunker chunker, ChunkedPrompt chunked, int chunkCount, int clipSkip, string text)
    {
        var input = ToEncoderInput(chunker, chunked, chunkCount);
        if (model.Tokenizer2 is { } tokenizer2)
        {
            // tokenizer_2 pads with id 0: the same chunks, other padding.
            var chunker2 = new PromptChunker(tokenizer2, embeddings);
            return model.PromptEncoder.Encode(input, ToEncoderInput(chunker2, chunker2.Chunk(text), chunkCount), clipSkip);
        }
        return model.PromptEncoder.Encode(input, clipSkip);
    }

    private PromptChunks ToEncoderInput(PromptChunker chunker, ChunkedPrompt chunked, int chunkCount)
    {
        var all = chunked.Chunks.Concat(Enumerable.Range(0, chunkCount - chunked.Chunks.Count).Select(_ => chunker.EmptyChunk())).ToList();
        var placed = new List<ChunkEmbedding>();
        for (var c = 0; c < all.Count; c++)
            foreach (var fix in all[c].Fixes)
            {
                var e = embeddings.Embeddings[fix.Embedding.Name];
                placed.Add(new ChunkEmbedding(c, fix.Offset, e.Vectors, e.Vectors2));
            }
        return new PromptChunks([.. all.Select(c => c.Ids)], [.. all.Select(c => c.Weights.Select(w => (float)w).ToArray())]) { Embeddings = placed };
    }
}
