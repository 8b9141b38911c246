using SdAppliance.Models.TextEncoders;
using SdAppliance.Torch;

namespace SdAppliance.Training.Data;

/// <summary>
/// Text-encoder outputs per caption, for runs whose text encoder is frozen and whose captions do not change
/// between draws (no caption shuffle, dropout only to the one empty caption). The encoder runs once per distinct
/// caption, without gradients; <see cref="Get"/> returns a copy the caller disposes.
/// </summary>
public sealed class TextEmbeddingCache(Func<string, TextConditioning> encode) : IDisposable
{
    private readonly Func<string, TextConditioning> encode = encode ?? throw new ArgumentNullException(nameof(encode));
    private readonly Dictionary<string, TextConditioning> cache = new(StringComparer.Ordinal);
    private readonly Lock gate = new();
    private bool disposed;

    /// <summary>Captions answered from the cache.</summary>
    public int Hits { get; private set; }

    /// <summary>Captions encoded.</summary>
    public int Misses { get; private set; }

    public int Count
    {
        get
        {
            lock (gate) return cache.Count;
        }
    }

    public TextConditioning Get(string caption)
    {
        ArgumentNullException.ThrowIfNull(caption);
        lock (gate)
        {
            ObjectDisposedException.ThrowIf(disposed, this);
            if (cache.TryGetValue(caption, out var cached))
            {
                Hits++;
                return Copy(cached);
            }
            TextConditioning encoded;
            using (Autograd.NoGrad()) encoded = encode(caption);
            // Kept across steps: out of whatever dispose scope the caller runs in.
            encoded.PromptEmbeds.DetachFromDisposeScope();
            encoded.PooledPromptEmbeds?.DetachFromDisposeScope();
            Misses++;
            cache[caption] = encoded;
            return Copy(encoded);
        }
    }

    private static TextConditioning Copy(TextConditioning c) => new(c.PromptEmbeds.Clone(), c.PooledPromptEmbeds?.Clone());

    public void Dispose()
    {
        lock (gate)
        {
            if (disposed) return;
            disposed = true;
            foreach (var c in cache.Values) c.Dispose();
            cache.Clear();
        }
    }
}
