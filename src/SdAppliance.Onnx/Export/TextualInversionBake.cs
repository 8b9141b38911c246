using SdAppliance.Formats;
using SdAppliance.Models.Adapters;
using SdAppliance.Models.Tokenization;
using SdAppliance.Torch;

namespace SdAppliance.Onnx.Export;

/// <summary>Which of an embedding's vector sets a text encoder takes: SDXL files carry <c>clip_l</c> and <c>clip_g</c>.</summary>
public enum TextualInversionVectors
{
    /// <summary><see cref="TextualInversionEmbedding.Vectors"/>: SD 1.x/2.x's text encoder, SDXL's <c>text_encoder</c> (clip_l).</summary>
    First,

    /// <summary><see cref="TextualInversionEmbedding.Vectors2"/>: SDXL's <c>text_encoder_2</c> (clip_g).</summary>
    Second,
}

/// <summary>
/// What <see cref="TextualInversionBake.Bake"/> gives one text encoder: its tokenizer with the embeddings' tokens added,
/// and the extended token embedding table to pass to <see cref="ClipTextEncoderOnnx.Build"/> as a weight override.
/// Disposing it frees the table.
/// </summary>
public sealed class BakedTextualInversion(ClipTokenizer tokenizer, Tensor tokenEmbedding, IReadOnlyList<ClipAddedToken> tokens) : IDisposable
{
    public ClipTokenizer Tokenizer { get; } = tokenizer;

    /// <summary>[vocab + added, hidden]: the model's rows, then one per added token.</summary>
    public Tensor TokenEmbedding { get; } = tokenEmbedding;

    /// <summary>The tokens added, in id order (a multi-vector embedding's <c>name</c>, <c>name_1</c>, …).</summary>
    public IReadOnlyList<ClipAddedToken> Tokens { get; } = tokens;

    /// <summary>The state-dict override for <see cref="ClipTextEncoderOnnx.Build"/>.</summary>
    public IReadOnlyDictionary<string, Tensor> WeightOverrides => new Dictionary<string, Tensor> { [TextualInversionBake.TokenEmbeddingKey] = TokenEmbedding };

    public void Dispose() => TokenEmbedding.Dispose();
}

/// <summary>
/// Textual-inversion embeddings baked into an export, as diffusers' <c>load_textual_inversion</c> does it: each vector
/// becomes a row of the token embedding table and a token of the tokenizer, one embedding of n vectors the tokens
/// <c>name</c>, <c>name_1</c>, …, <c>name_{n-1}</c>. Our tokenizer expands the word <c>name</c> in a prompt to all n of
/// them (diffusers' <c>maybe_convert_prompt</c>); an app that does not (optimum, OnnxStack) gets the first vector
/// only from <c>name</c>, and all of them from the prompt <c>name name_1 …</c>. The tokens are whole words
/// (<c>single_word</c>), lower-case like the text they are matched in. A name that is a piece of the vocabulary
/// (<c>a</c>, <c>cat</c>) is refused, as diffusers refuses it: transformers would read it as that piece.
/// </summary>
public static class TextualInversionBake
{
    public const string TokenEmbeddingKey = "text_model.embeddings.token_embedding.weight";

    /// <param name="tokenizer">The text encoder's tokenizer (SDXL: <c>tokenizer</c> for <see cref="TextualInversionVectors.First"/>,
    /// <c>tokenizer_2</c> for <see cref="TextualInversionVectors.Second"/>).</param>
    /// <param name="stateDict">The text encoder's state dict (only its token embedding table is read).</param>
    public static BakedTextualInversion Bake(ClipTokenizer tokenizer, IReadOnlyDictionary<string, Tensor> stateDict,
        IReadOnlyList<TextualInversionEmbedding> embeddings, TextualInversionVectors vectors = TextualInversionVectors.First)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(stateDict);
        ArgumentNullException.ThrowIfNull(embeddings);
        if (!stateDict.TryGetValue(TokenEmbeddingKey, out var table))
            throw new ArgumentException($"the state dict has no '{TokenEmbeddingKey}': it is not a CLIP text encoder's", nameof(stateDict));
        var (rows, width) = (table.Size(0), table.Size(1));
        // New rows follow the table; the tokenizer must not already use those ids.
        if (tokenizer.NextFreeId > rows)
            throw new UserInputException(null, $"the tokenizer has ids up to {tokenizer.NextFreeId - 1}, but the text encoder's embedding table only {rows} rows",
                "use the tokenizer that belongs to this text encoder");

        using var scope = torch.NewDisposeScope();
        var parts = new List<Tensor> { table };
        var tokens = new List<ClipAddedToken>();
        var nextId = (int)rows;
        foreach (var embedding in embeddings)
        {
            var set = vectors == TextualInversionVectors.First ? embedding.Vectors : embedding.Vectors2
                ?? throw new UserInputException(embedding.Name, "the textual-inversion embedding has no clip_g vectors for SDXL's second text encoder",
                    "use an embedding trained for SDXL");
            if (set.Dim != 2 || set.Size(0) == 0 || set.Size(1) != width)
                throw new UserInputException(embedding.Name,
                    $"the textual-inversion embedding's vectors are [{string.Join(", ", set.Shape)}], but this text encoder's tokens are {width} wide",
                    "use an embedding made for this model family");
            if (tokenizer.HasAddedToken(embedding.Name))
                throw new UserInputException(embedding.Name, "the tokenizer already has a token of this name", "rename the embedding file");
            for (var i = 0; i < set.Size(0); i++)
                tokens.Add(new ClipAddedToken(i == 0 ? embedding.Name : $"{embedding.Name}_{i}", nextId++, SingleWord: true));
            parts.Add(set.To(table.Device, table.DType));
        }
        // The tokenizer refuses a name twice or one that is a vocabulary token; before the table is built.
        var baked = tokenizer.WithAddedTokens(tokens);
        var extended = torch.Cat(parts, 0);
        return new BakedTextualInversion(baked, scope.MoveToOuterScope(extended), baked.AddedTokens.Where(t => t.Id >= rows).ToList());
    }
}
