using SdAppliance.Formats;
using SdAppliance.Models.Adapters;
using SdAppliance.Models.Tokenization;

namespace SdAppliance.Diffusion.Prompts;

/// <summary>
/// The textual-inversion embeddings a prompt may name, matched in its tokens the way A1111 does:
/// an embedding applies where the tokens of its name appear, longest name first.
/// </summary>
public sealed class EmbeddingLibrary : ITextualInversionLookup, IDisposable
{
    private readonly Dictionary<string, TextualInversionEmbedding> byName = new(StringComparer.Ordinal);
    private readonly Dictionary<int, List<(int[] Tokens, TextualInversionEmbedding Embedding)>> byFirstToken = [];
    private readonly ClipTokenizer tokenizer;
    private readonly HashSet<TextualInversionEmbedding> owned = new(ReferenceEqualityComparer.Instance);

    public EmbeddingLibrary(ClipTokenizer tokenizer) => this.tokenizer = tokenizer;

    public IReadOnlyDictionary<string, TextualInversionEmbedding> Embeddings => byName;

    /// <summary>The names of the embeddings found in a prompt so far (A1111 lists them in "TI hashes").</summary>
    public IReadOnlyCollection<string> Used => used;

    private readonly SortedSet<string> used = new(StringComparer.Ordinal);

    /// <summary>Adds an embedding; with <paramref name="owns"/> the library disposes it (a trainer keeps its own).</summary>
    public void Add(TextualInversionEmbedding embedding, bool owns = true)
    {
        var tokens = tokenizer.Encode(embedding.Name).ToArray();
        if (tokens.Length == 0) throw new UserInputException(embedding.Name, "the embedding's name has no tokens");
        if (byName.Remove(embedding.Name, out var old))
        {
            byFirstToken[tokenizer.Encode(old.Name)[0]].RemoveAll(e => e.Embedding == old);
            if (owned.Remove(old)) old.Dispose();
        }
        byName[embedding.Name] = embedding;
        if (owns) owned.Add(embedding);
        if (!byFirstToken.TryGetValue(tokens[0], out var list)) byFirstToken[tokens[0]] = list = [];
        list.Add((tokens, embedding));
        list.Sort((a, b) => b.Tokens.Length.CompareTo(a.Tokens.Length));
    }

    public TextualInversionMatch? FindEmbeddingAtPosition(IReadOnlyList<int> tokens, int position)
    {
        if (!byFirstToken.TryGetValue(tokens[position], out var candidates)) return null;
        foreach (var (nameTokens, embedding) in candidates)
        {
            if (position + nameTokens.Length > tokens.Count) continue;
            var matches = true;
            for (var i = 1; i < nameTokens.Length && matches; i++) matches = tokens[position + i] == nameTokens[i];
            if (!matches) continue;
            used.Add(embedding.Name);
            return new TextualInversionMatch(embedding.Name, embedding.VectorCount, nameTokens.Length);
        }
        return null;
    }

    public void Dispose()
    {
        foreach (var e in owned) e.Dispose();
        owned.Clear();
        used.Clear();
        byName.Clear();
        byFirstToken.Clear();
    }
}
