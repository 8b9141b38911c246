using SdAppliance.Torch;

namespace SdAppliance.Models.TextEncoders;


/// <summary>
/// A tokenized prompt as the prompt parser hands it over: chunks of ids (77 each for Stable
/// Diffusion: bos, 75 tokens, eos, padding) with one emphasis multiplier per id (1 for
/// bos/eos/padding and plain words, 1.1 for <c>(word)</c>, 1.3 for <c>(word:1.3)</c>...).
/// </summary>
public sealed record PromptChunks
{
    public PromptChunks(int[][] chunkIds, float[][] chunkWeights)
    {
        ArgumentNullException.ThrowIfNull(chunkIds);
        ArgumentNullException.ThrowIfNull(chunkWeights);
        if (chunkIds.Length == 0) throw new ArgumentException("a prompt has at least one chunk (an empty prompt is bos, eos and padding)", nameof(chunkIds));
        if (chunkWeights.Length != chunkIds.Length)
            throw new ArgumentException($"{chunkIds.Length} chunks of ids but {chunkWeights.Length} chunks of weights", nameof(chunkWeights));
        var length = chunkIds[0].Length;
        for (var i = 0; i < chunkIds.Length; i++)
        {
            if (chunkIds[i].Length != length)
                throw new ArgumentException($"chunk {i} has {chunkIds[i].Length} ids, chunk 0 has {length}: chunks must be padded to one length", nameof(chunkIds));
            if (chunkWeights[i].Length != length)
                throw new ArgumentException($"chunk {i} has {chunkIds[i].Length} ids but {chunkWeights[i].Length} weights", nameof(chunkWeights));
        }
        ChunkIds = chunkIds;
        ChunkWeights = chunkWeights;
    }

    /// <summary>One chunk of ids with every weight 1 (a prompt without emphasis).</summary>
    public static PromptChunks Unweighted(params int[][] chunkIds) =>
        new(chunkIds, [.. chunkIds.Select(c => Enumerable.Repeat(1f, c.Length).ToArray())]);

    public int[][] ChunkIds { get; }
    public float[][] ChunkWeights { get; }

    /// <summary>Textual-inversion vectors to put in place of the ids at their positions.</summary>
    public IReadOnlyList<ChunkEmbedding> Embeddings { get; init; } = [];

    /// <summary>The overrides for the text encoder <paramref name="encoderIndex"/> (0, or 1 for SDXL's second).</summary>
    public IReadOnlyList<TokenOverride> TokenOverrides(int encoderIndex) =>
        [.. Embeddings.Select(e => new TokenOverride(e.Chunk, e.Offset, encoderIndex == 0 ? e.Vectors : e.Vectors2
            ?? throw new InvalidOperationException($"embedding at chunk {e.Chunk} has no vectors for the second text encoder (not an SDXL embedding)")))];
    public int ChunkCount => ChunkIds.Length;
    public int ChunkLength => ChunkIds[0].Length;

    public bool IsWeighted => ChunkWeights.Any(c => c.Any(w => w != 1f));

    /// <summary>The ids as an int64 tensor [chunks, length].</summary>
    public Tensor IdsTensor(Device? device = null)
    {
        var flat = ChunkIds.SelectMany(c => c.Select(id => (long)id)).ToArray();
        var ids = torch.Tensor(flat, ChunkCount, ChunkLength);
        if (device is not { } d || d == Device.Cpu) return ids;
        using (ids) return ids.To(d);
    }

    /// <summary>The weights as a float32 tensor [chunks, length].</summary>
    public Tensor WeightsTensor() => torch.Tensor(ChunkWeights.SelectMany(c => c).ToArray(), ChunkCount, ChunkLength);
}

/// <summary>An embedding's vectors placed at <paramref name="Offset"/> of chunk <paramref name="Chunk"/> (positions count bos as 0).</summary>
public sealed record ChunkEmbedding(int Chunk, int Offset, Tensor Vectors, Tensor? Vectors2);

/// <summary>
/// The UNet's text conditioning for one prompt: <see cref="PromptEmbeds"/> [1, chunks × 77, C]
/// (chunks concatenated along the sequence axis) and, for SDXL, <see cref="PooledPromptEmbeds"/>
/// [1, 1280] (the <c>text_embeds</c> added to the time embedding). Disposing frees both.
/// </summary>
public sealed record TextConditioning(Tensor PromptEmbeds, Tensor? PooledPromptEmbeds) : IDisposable
{
    public void Dispose()
    {
        PromptEmbeds.Dispose();
        PooledPromptEmbeds?.Dispose();
    }
}

/// <summary>
/// Turns tokenized prompts into UNet conditioning the way A1111 does: every chunk is encoded
/// on its own (each starts at position 0 with its own bos/eos), hidden states are picked by
/// the clip skip, scaled by the emphasis weights with the mean restored, and the chunks
/// concatenated. The same clip skip serves the prompt and the negative prompt (diffusers
/// applies <c>clip_skip</c> to the prompt only). The encoder borrows its text models; it does
/// not dispose them. Gradients flow as usual: wrap calls in <c>Autograd.NoGrad()</c> for
/// inference.
/// </summary>
public abstract class PromptEncoder
{
    /// <summary>
    /// Encodes one prompt. <paramref name="clipSkip"/> uses A1111's numbering: 1 is the normal
    /// output, 2 the layer before it, and so on (what each family does with it is documented on
    /// the concrete encoders).
    /// </summary>
    public abstract TextConditioning Encode(PromptChunks prompt, int clipSkip = 1);

    /// <summary>
    /// Encodes a prompt tokenized twice, once per tokenizer (SDXL's two pad differently); an encoder
    /// with one text model uses the first.
    /// </summary>
    public virtual TextConditioning Encode(PromptChunks prompt, PromptChunks prompt2, int clipSkip = 1) => Encode(prompt, clipSkip);

    /// <summary>The largest clip skip this encoder accepts.</summary>
    public abstract int MaxClipSkip { get; }

    protected void CheckClipSkip(int clipSkip)
    {
        if (clipSkip < 1 || clipSkip > MaxClipSkip)
            throw new ArgumentOutOfRangeException(nameof(clipSkip), clipSkip, $"clip skip must be between 1 (the last layer) and {MaxClipSkip} for this text encoder");
    }

    /// <summary>
    /// A1111's emphasis ("Original"): <c>z *= weights</c> per token, then <c>z *= mean(z before) /
    /// mean(z after)</c>, so emphasis reshapes the conditioning without shifting its mean. The
    /// means are taken per chunk (row of <paramref name="hidden"/> [chunks, L, C]) as A1111 takes
    /// them per chunk of a one-prompt batch. <paramref name="weights"/> is [chunks, L].
    /// </summary>
    public static Tensor ApplyEmphasis(Tensor hidden, Tensor weights)
    {
        ArgumentNullException.ThrowIfNull(hidden);
        ArgumentNullException.ThrowIfNull(weights);
        using var scope = torch.NewDisposeScope();
        var originalMean = hidden.Mean([1, 2], keepdim: true);
        var weighted = hidden.Mul(weights.To(hidden.Device, hidden.DType).Unsqueeze(-1));
        var newMean = weighted.Mean([1, 2], keepdim: true);
        return scope.MoveToOuterScope(weighted.Mul(originalMean.Div(newMean)));
    }

    /// <summary>Emphasis applied to <paramref name="hidden"/> [chunks, L, C] (a new tensor; an alias when every weight is 1, which would change nothing).</summary>
    protected static Tensor Emphasize(Tensor hidden, PromptChunks prompt)
    {
        if (!prompt.IsWeighted) return hidden.Alias();
        using var weights = prompt.WeightsTensor();
        return ApplyEmphasis(hidden, weights);
    }

    /// <summary>[chunks, L, C] → [1, chunks × L, C]: the chunks one after the other along the sequence.</summary>
    protected static Tensor ConcatenateChunks(Tensor perChunk) =>
        perChunk.Reshape(1, perChunk.Size(0) * perChunk.Size(1), perChunk.Size(2));

    protected static Device DeviceOf(ClipTextModel model) => model.TextModel.Embeddings.TokenEmbedding.Weight.Device;
}

/// <summary>
/// SD 1.x (CLIP ViT-L/14) and SD 2.x (OpenCLIP ViT-H/14) conditioning: one CLIPTextModel.
/// Clip skip n (A1111) is <c>final_layer_norm(hidden_states[-n])</c>, and n = 1 is
/// <c>last_hidden_state</c>; this is diffusers' <c>clip_skip = n - 1</c>.
/// SD 2.x: diffusers' <c>text_encoder</c> holds only 23 of OpenCLIP-H's 24 blocks, so its
/// last_hidden_state (final LN applied) already is what SD 2.x was trained on, OpenCLIP's
/// penultimate block through ln_final; clip skip n then steps back from there, as in diffusers.
/// </summary>
public sealed class ClipPromptEncoder : PromptEncoder
{
    public ClipPromptEncoder(ClipTextModel textEncoder)
    {
        ArgumentNullException.ThrowIfNull(textEncoder);
        TextEncoder = textEncoder;
    }

    public ClipTextModel TextEncoder { get; }

    public override int MaxClipSkip => TextEncoder.Config.NumHiddenLayers;

    /// <summary>The conditioning of every chunk before emphasis: [chunks, L, C].</summary>
    public Tensor EncodeChunks(Tensor ids, int clipSkip = 1, IReadOnlyList<TokenOverride>? tokenOverrides = null)
    {
        CheckClipSkip(clipSkip);
        using var scope = torch.NewDisposeScope();
        var output = TextEncoder.Forward(ids, outputHiddenStates: clipSkip > 1, tokenOverrides);
        return scope.MoveToOuterScope(clipSkip == 1 ? output.LastHiddenState : TextEncoder.FinalLayerNorm.Forward(output.HiddenStates[^clipSkip]));
    }

    public override TextConditioning Encode(PromptChunks prompt, int clipSkip = 1)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        CheckClipSkip(clipSkip);
        using var scope = torch.NewDisposeScope();
        var hidden = EncodeChunks(prompt.IdsTensor(DeviceOf(TextEncoder)), clipSkip, prompt.TokenOverrides(0));
        return new TextConditioning(scope.MoveToOuterScope(ConcatenateChunks(Emphasize(hidden, prompt))), null);
    }
}

/// <summary>
/// SDXL conditioning: CLIP ViT-L/14 (<c>text_encoder</c>) and OpenCLIP ViT-bigG/14 with its
/// projection (<c>text_encoder_2</c>). Per chunk, each encoder's <c>hidden_states[-(n + 1)]</c>
/// for clip skip n (A1111 numbering; n = 1 is the penultimate layer), WITHOUT the final layer
/// norm, as diffusers' <c>encode_prompt</c> does (its <c>hidden_states[-(clip_skip + 2)]</c>
/// with <c>clip_skip = n - 1</c>), emphasis applied to each encoder's part separately (A1111
/// wraps each embedder on its own), then concatenated on the feature axis (768 + 1280 = 2048).
/// The pooled embedding is bigG's <c>text_embeds</c> (last layer, final LN, projection) of the
/// first chunk, unweighted.
/// </summary>
public sealed class SdxlPromptEncoder : PromptEncoder
{
    public SdxlPromptEncoder(ClipTextModel textEncoder, ClipTextModel textEncoder2)
    {
        ArgumentNullException.ThrowIfNull(textEncoder);
        ArgumentNullException.ThrowIfNull(textEncoder2);
        if (textEncoder2.TextProjection is null)
            throw new ArgumentException("SDXL's text_encoder_2 must be a CLIPTextModelWithProjection (withProjection: true)", nameof(textEncoder2));
        TextEncoder = textEncoder;
        TextEncoder2 = textEncoder2;
    }

    public ClipTextModel TextEncoder { get; }
    public ClipTextModel TextEncoder2 { get; }

    public override int MaxClipSkip => Math.Min(TextEncoder.Config.NumHiddenLayers, TextEncoder2.Config.NumHiddenLayers) - 1;

    /// <summary>One tokenization for both encoders (when their tokenizers agree, padding included).</summary>
    public override TextConditioning Encode(PromptChunks prompt, int clipSkip = 1) => Encode(prompt, prompt, clipSkip);

    /// <summary>
    /// Each encoder with its own tokenization (SDXL's tokenizer pads with <c>&lt;|endoftext|&gt;</c>,
    /// tokenizer_2 with id 0); both must have the same chunks.
    /// </summary>
    public override TextConditioning Encode(PromptChunks prompt, PromptChunks prompt2, int clipSkip = 1)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        ArgumentNullException.ThrowIfNull(prompt2);
        CheckClipSkip(clipSkip);
        if (prompt.ChunkCount != prompt2.ChunkCount || prompt.ChunkLength != prompt2.ChunkLength)
            throw new ArgumentException($"the two tokenizations differ in shape: {prompt.ChunkCount}×{prompt.ChunkLength} and {prompt2.ChunkCount}×{prompt2.ChunkLength}", nameof(prompt2));

        using var scope = torch.NewDisposeScope();
        var output = TextEncoder.Forward(prompt.IdsTensor(DeviceOf(TextEncoder)), tokenOverrides: prompt.TokenOverrides(0));
        var output2 = TextEncoder2.Forward(prompt2.IdsTensor(DeviceOf(TextEncoder2)), tokenOverrides: prompt2.TokenOverrides(1));
        var promptEmbeds = torch.Cat([Emphasize(output.HiddenStates[^(clipSkip + 1)], prompt), Emphasize(output2.HiddenStates[^(clipSkip + 1)], prompt2)], -1);
        var pooledPromptEmbeds = output2.TextEmbeds!.Narrow(0, 0, 1);
        return new TextConditioning(scope.MoveToOuterScope(ConcatenateChunks(promptEmbeds)), scope.MoveToOuterScope(pooledPromptEmbeds));
    }
}

/// <summary>
/// The SDXL refiner's conditioning: OpenCLIP ViT-bigG/14 alone (its <c>text_encoder_2</c>), as diffusers' <c>encode_prompt</c>
/// runs with <c>text_encoder=None</c>: per chunk <c>hidden_states[-(n + 1)]</c> for clip skip n without the final layer norm
/// (1280 wide in the real model), emphasis applied, and the pooled embedding the first chunk's <c>text_embeds</c>, as
/// <see cref="SdxlPromptEncoder"/> takes bigG's half.
/// </summary>
public sealed class SdxlRefinerPromptEncoder : PromptEncoder
{
    public SdxlRefinerPromptEncoder(ClipTextModel textEncoder2)
    {
        ArgumentNullException.ThrowIfNull(textEncoder2);
        if (textEncoder2.TextProjection is null)
            throw new ArgumentException("the SDXL refiner's text_encoder_2 must be a CLIPTextModelWithProjection (withProjection: true)", nameof(textEncoder2));
        TextEncoder2 = textEncoder2;
    }

    public ClipTextModel TextEncoder2 { get; }

    public override int MaxClipSkip => TextEncoder2.Config.NumHiddenLayers - 1;

    public override TextConditioning Encode(PromptChunks prompt, int clipSkip = 1)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        CheckClipSkip(clipSkip);
        using var scope = torch.NewDisposeScope();
        var output = TextEncoder2.Forward(prompt.IdsTensor(DeviceOf(TextEncoder2)), tokenOverrides: prompt.TokenOverrides(1));
        var promptEmbeds = Emphasize(output.HiddenStates[^(clipSkip + 1)], prompt);
        var pooledPromptEmbeds = output.TextEmbeds!.Narrow(0, 0, 1);
        return new TextConditioning(scope.MoveToOuterScope(ConcatenateChunks(promptEmbeds)), scope.MoveToOuterScope(pooledPromptEmbeds));
    }
}
