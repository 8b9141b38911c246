namespace SdAppliance.Diffusion.Prompts;

/// <summary>A textual-inversion embedding found in a prompt's tokens.</summary>
/// <param name="Name">The embedding's name (its file name, which the user types).</param>
/// <param name="VectorCount">How many token vectors the embedding replaces the name with.</param>
/// <param name="TokenLength">How many prompt tokens the name itself spans.</param>
public sealed record TextualInversionMatch(string Name, int VectorCount, int TokenLength);

/// <summary>
/// The hook the chunker asks for textual-inversion embeddings (A1111's
/// <c>embedding_db.find_embedding_at_position</c>).
/// </summary>
public interface ITextualInversionLookup
{
    /// <summary>The embedding whose name's tokens start at <paramref name="tokens"/>[<paramref name="position"/>], or null.</summary>
    TextualInversionMatch? FindEmbeddingAtPosition(IReadOnlyList<int> tokens, int position);
}

/// <summary>No embeddings loaded: every token stays a token.</summary>
public sealed class NoTextualInversions : ITextualInversionLookup
{
    public static readonly NoTextualInversions Instance = new();

    public TextualInversionMatch? FindEmbeddingAtPosition(IReadOnlyList<int> tokens, int position) => null;
}
