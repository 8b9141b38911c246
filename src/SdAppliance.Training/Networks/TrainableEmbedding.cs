using SdAppliance.Models.Adapters;
using SdAppliance.Models.Loading;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Tokenization;
using SdAppliance.Torch;

namespace SdAppliance.Training.Networks;

/// <summary>
/// Textual inversion's trainable vectors: <see cref="Vectors"/> [n, width] (and SDXL's
/// <see cref="Vectors2"/> for the second text encoder), float32 leaves that require grad. They reach
/// the text encoder through the prompt path's token overrides (<see cref="AsEmbedding"/> in an
/// <c>EmbeddingLibrary</c>), which copy them over the placeholder's token rows, so the token
/// embedding matrix itself is never written and only these vectors get gradients that matter.
/// </summary>
public sealed class TrainableEmbedding : IDisposable
{
    /// <summary>A prompt chunk holds 75 tokens; an embedding longer than that could never be placed.</summary>
    public const int MaxVectors = 75;

    private TrainableEmbedding(string placeholderToken, Tensor vectors, Tensor? vectors2)
    {
        PlaceholderToken = placeholderToken;
        Vectors = vectors;
        Vectors2 = vectors2;
    }

    /// <summary>The word the prompt uses for the concept; also the embedding's name (A1111 names it after the file).</summary>
    public string PlaceholderToken { get; }

    /// <summary>[n, width of the (first) text encoder], requires grad.</summary>
    public Tensor Vectors { get; }

    /// <summary>[n, width of SDXL's second text encoder], requires grad; null for SD 1.x/2.x.</summary>
    public Tensor? Vectors2 { get; }

    public int VectorCount => (int)Vectors.Size(0);

    /// <summary>
    /// New vectors initialised as A1111's <c>create_embedding</c>: the initializer text is tokenized
    /// (at most <paramref name="numVectors"/> tokens, no start/end tokens) and vector i is the token
    /// embedding of token ⌊i · tokens / n⌋, so "red car" with 4 vectors gives red, red, car, car.
    /// An empty initializer leaves zeros. On the model's device, in float32 whatever the model's dtype.
    /// </summary>
    public static TrainableEmbedding Create(StableDiffusionModel model, string placeholderToken, string initializerToken, int numVectors)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (string.IsNullOrWhiteSpace(placeholderToken))
            throw new ArgumentException("placeholder_token must be a non-empty word", nameof(placeholderToken));
        if (model.Tokenizer.Encode(placeholderToken).Count == 0)
            throw new ArgumentException($"placeholder_token '{placeholderToken}' has no tokens; use a word", nameof(placeholderToken));
        if (numVectors is < 1 or > MaxVectors)
            throw new ArgumentOutOfRangeException(nameof(numVectors), numVectors, $"num_vectors must be between 1 and {MaxVectors}");
        initializerToken ??= "";
        Tensor? vectors = null, vectors2 = null;
        try
        {
            vectors = Initial(model.Tokenizer, model.TextEncoder, initializerToken, numVectors, nameof(initializerToken));
            if (model.TextEncoder2 is not null)
                vectors2 = Initial(model.Tokenizer2 ?? model.Tokenizer, model.TextEncoder2, initializerToken, numVectors, nameof(initializerToken));
            return new TrainableEmbedding(placeholderToken, vectors, vectors2);
        }
        catch
        {
            vectors?.Dispose();
            vectors2?.Dispose();
            throw;
        }
    }

    private static Tensor Initial(ClipTokenizer tokenizer, ClipTextModel encoder, string initializer, int count, string parameter)
    {
        var table = encoder.TextModel.Embeddings.TokenEmbedding.Weight;
        var ids = tokenizer.Encode(initializer).Take(count).ToList();
        if (initializer.Trim().Length > 0 && ids.Count == 0)
            throw new ArgumentException($"initializer_token '{initializer}' has no tokens", parameter);
        Tensor result;
        using (Autograd.NoGrad())
        {
            if (ids.Count == 0)
            {
                result = torch.Zeros([count, table.Size(1)], DType.Float32, table.Device);
            }
            else
            {
                var picks = Enumerable.Range(0, count).Select(i => (long)ids[i * ids.Count / count]).ToArray();
                using var index = torch.Tensor(picks, picks.Length);
                using var onDevice = index.To(table.Device);
                using var rows = table.IndexSelect(0, onDevice);
                result = rows.To(table.Device, DType.Float32, copy: true);
            }
        }
        return result.RequiresGrad_(true).DetachFromDisposeScope();
    }

    /// <summary>
    /// The vectors as the prompt path's embedding, named <see cref="PlaceholderToken"/>: it holds
    /// aliases of the same tensors (so gradients reach them), and disposing it leaves them alive.
    /// </summary>
    public TextualInversionEmbedding AsEmbedding() => new(PlaceholderToken, Vectors.Alias(), Vectors2?.Alias());

    public void Dispose()
    {
        Vectors.Dispose();
        Vectors2?.Dispose();
    }
}
