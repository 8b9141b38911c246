using SdAppliance.Formats;
using SdAppliance.Models.Tokenization;

namespace SdAppliance.Diffusion.Prompts;

/// <summary>Where an embedding's vectors go: positions <c>Offset .. Offset+VectorCount-1</c> of the chunk's ids.</summary>
public sealed record PromptChunkFix(int Offset, TextualInversionMatch Embedding);

/// <summary>
/// One text-encoder input: <c>[bos] + 75 tokens + [eos]</c> (padded) and one attention multiplier per id
/// (1.0 for bos, eos and padding). Ids where an embedding goes are 0 and listed in <see cref="Fixes"/>.
/// </summary>
public sealed record PromptChunk(int[] Ids, double[] Weights, IReadOnlyList<PromptChunkFix> Fixes);

/// <param name="TokenCount">Prompt tokens counted as A1111 shows them: 75 per full chunk plus the last chunk's.</param>
public sealed record ChunkedPrompt(IReadOnlyList<PromptChunk> Chunks, int TokenCount);

/// <summary>
/// Turns a prompt (adapter tags already taken out, see <see cref="ExtraNetworkTags"/>) into A1111-style chunks
/// (<c>modules/sd_hijack_clip.py</c>, <c>tokenize_line</c>): each weighted run is tokenized on its own, tokens
/// fill chunks of 75, <c>BREAK</c> starts a new chunk, and a chunk that would overflow is cut after its last
/// comma when that comma is among the last <see cref="CommaPaddingBacktrack"/> tokens, the rest moving to the
/// next chunk. A prompt longer than one chunk is encoded chunk by chunk and the results concatenated.
/// </summary>
public sealed class PromptChunker
{
    private readonly ClipTokenizer _tokenizer;
    private readonly ITextualInversionLookup _embeddings;
    private readonly int? _commaId;

    /// <summary>
    /// The most chunks one prompt may take: 32 (2,400 tokens) is eight times the longest prompts A1111 users write, and keeps
    /// cross-attention at 2,464 keys; more is refused with <see cref="PromptTooLongException"/> before anything is encoded.
    /// </summary>
    public const int MaxChunks = 32;

    /// <summary>Prompt tokens per chunk: the model length less the start and end tokens (75 for CLIP).</summary>
    public int ChunkLength { get; }

    /// <summary>A1111's <c>comma_padding_backtrack</c> (default 20); 0 turns the comma rule off.</summary>
    public int CommaPaddingBacktrack { get; }

    public PromptChunker(ClipTokenizer tokenizer, ITextualInversionLookup? embeddings = null, int commaPaddingBacktrack = 20)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(commaPaddingBacktrack);
        _tokenizer = tokenizer;
        _embeddings = embeddings ?? NoTextualInversions.Instance;
        _commaId = tokenizer.TokenToId(",</w>");
        ChunkLength = tokenizer.ModelMaxLength - 2;
        CommaPaddingBacktrack = commaPaddingBacktrack;
    }

    /// <summary>Parses the emphasis syntax of <paramref name="prompt"/> and chunks it.</summary>
    public ChunkedPrompt Chunk(string prompt) => Chunk(PromptAttention.Parse(prompt));

    public ChunkedPrompt Chunk(IReadOnlyList<WeightedText> parsed)
    {
        var chunks = new List<PromptChunk>();
        var tokens = new List<int>();
        var weights = new List<double>();
        var fixes = new List<PromptChunkFix>();
        var tokenCount = 0;
        var lastComma = -1;

        void NextChunk(bool isLast = false)
        {
            // The last chunk counts its real tokens only; the others count as full.
            tokenCount += isLast ? tokens.Count : ChunkLength;
            if (chunks.Count == MaxChunks) throw new PromptTooLongException(chunks.Count + 1);
            chunks.Add(Finish(tokens, weights, fixes));
            tokens.Clear();
            weights.Clear();
            fixes.Clear();
            lastComma = -1;
        }

        foreach (var run in parsed)
        {
            if (run.IsBreak)
            {
                NextChunk();
                continue;
            }
            var runTokens = _tokenizer.Encode(run.Text);
            var position = 0;
            while (position < runTokens.Count)
            {
                var token = runTokens[position];
                if (token == _commaId)
                    lastComma = tokens.Count;
                else if (CommaPaddingBacktrack != 0 && tokens.Count == ChunkLength && lastComma != -1
                    && tokens.Count - lastComma <= CommaPaddingBacktrack)
                {
                    // The chunk is full and a comma is near its end: end the chunk after the comma.
                    var breakAt = lastComma + 1;
                    var relocTokens = tokens.GetRange(breakAt, tokens.Count - breakAt);
                    var relocWeights = weights.GetRange(breakAt, weights.Count - breakAt);
                    // A1111 leaves the fixes of moved embeddings behind (pointing into the padding); they move
                    // with their tokens here.
                    var relocFixes = fixes.Where(f => f.Offset >= breakAt)
                        .Select(f => f with { Offset = f.Offset - breakAt }).ToList();
                    fixes.RemoveAll(f => f.Offset >= breakAt);
                    tokens.RemoveRange(breakAt, tokens.Count - breakAt);
                    weights.RemoveRange(breakAt, weights.Count - breakAt);
                    NextChunk();
                    tokens.AddRange(relocTokens);
                    weights.AddRange(relocWeights);
                    fixes.AddRange(relocFixes);
                }

                if (tokens.Count == ChunkLength) NextChunk();

                var embedding = _embeddings.FindEmbeddingAtPosition(runTokens, position);
                if (embedding is null)
                {
                    // An embedding baked into the tokenizer (an ONNX export) is kept in one chunk, as a loaded one is below.
                    var baked = Math.Min(_tokenizer.AddedTokenRunLength(runTokens, position), ChunkLength);
                    if (baked > 1 && tokens.Count + baked > ChunkLength) NextChunk();
                    for (var k = 0; k < baked; k++)
                    {
                        tokens.Add(runTokens[position + k]);
                        weights.Add(run.Weight);
                    }
                    position += baked;
                    continue;
                }
                if (embedding.VectorCount > ChunkLength || embedding.VectorCount < 1 || embedding.TokenLength < 1)
                    throw new UserInputException(embedding.Name,
                        $"the textual-inversion embedding has {embedding.VectorCount} vectors for {embedding.TokenLength} tokens; a chunk holds 1 to {ChunkLength} vectors");
                if (tokens.Count + embedding.VectorCount > ChunkLength) NextChunk();
                fixes.Add(new PromptChunkFix(tokens.Count, embedding));
                // Placeholder ids; the text encoder puts the embedding's vectors there.
                tokens.AddRange(Enumerable.Repeat(0, embedding.VectorCount));
                weights.AddRange(Enumerable.Repeat(run.Weight, embedding.VectorCount));
                position += embedding.TokenLength;
            }
        }

        if (tokens.Count > 0 || chunks.Count == 0) NextChunk(isLast: true);
        return new ChunkedPrompt(chunks, tokenCount);
    }

    /// <summary>A chunk with no prompt tokens (what an empty prompt gives); A1111 pads shorter prompts of a batch with it.</summary>
    public PromptChunk EmptyChunk() => Finish([], [], []);

    private PromptChunk Finish(List<int> tokens, List<double> weights, List<PromptChunkFix> fixes)
    {
        var length = ChunkLength + 2;
        var ids = new int[length];
        var w = new double[length];
        Array.Fill(w, 1.0);
        ids[0] = _tokenizer.BosId;
        // A1111 fills with eos, then (SD 2.x, whose pad differs from eos) overwrites everything after the
        // first eos with the pad id.
        Array.Fill(ids, _tokenizer.EosId, 1, length - 1);
        tokens.CopyTo(ids, 1);
        weights.CopyTo(w, 1);
        if (_tokenizer.PadId != _tokenizer.EosId)
        {
            var firstEos = Array.IndexOf(ids, _tokenizer.EosId);
            Array.Fill(ids, _tokenizer.PadId, firstEos + 1, length - firstEos - 1);
        }
        // Offsets counted in the prompt tokens become positions in the ids (after bos).
        var shifted = fixes.Select(f => f with { Offset = f.Offset + 1 }).ToList();
        return new PromptChunk(ids, w, shifted);
    }
}
