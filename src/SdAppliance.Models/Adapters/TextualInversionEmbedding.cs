using SdAppliance.Formats;
using SdAppliance.Formats.Adapters;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;
using SdAppliance.Torch.Serialization;

namespace SdAppliance.Models.Adapters;

/// <summary>
/// A textual-inversion embedding: <see cref="Vectors"/> [n, width] replace the tokens of its
/// <see cref="Name"/> in a prompt (SDXL files carry one set per text encoder: <c>clip_l</c> and
/// <c>clip_g</c>, the latter in <see cref="Vectors2"/>). Read from every layout <see cref="TextualInversionFile"/> knows.
/// </summary>
public sealed class TextualInversionEmbedding(string name, Tensor vectors, Tensor? vectors2 = null) : IDisposable
{
    public string Name { get; } = name;

    /// <summary>[n, width] for the (first) text encoder.</summary>
    public Tensor Vectors { get; } = vectors;

    /// <summary>[n, width2] for SDXL's second text encoder, or null.</summary>
    public Tensor? Vectors2 { get; } = vectors2;

    public int VectorCount => (int)Vectors.Size(0);

    /// <summary>Loads the embedding in <paramref name="path"/> (<see cref="TextualInversionFile"/>); its name is the file name, as A1111 uses it.</summary>
    public static TextualInversionEmbedding Load(string path)
    {
        var name = Path.GetFileNameWithoutExtension(path);
        if (Path.GetExtension(path).ToLowerInvariant() is not (".safetensors" or ".pt" or ".bin"))
            throw new UserInputException(path, $"{Path.GetExtension(path)} is not a textual-inversion embedding format", "use .safetensors, .pt or .bin");
        using var file = TensorFile.OpenNested(path);
        var (key, key2) = TextualInversionFile.FindVectors(file);
        var vectors = Finite(path, "the vectors", AsMatrix(file.ReadTensor(key)));
        if (key2 is null) return new TextualInversionEmbedding(name, vectors);
        Tensor vectors2;
        try
        {
            vectors2 = Finite(path, "the second encoder's vectors", AsMatrix(file.ReadTensor(key2)));
        }
        catch
        {
            vectors.Dispose();
            throw;
        }
        if (vectors.Size(0) != vectors2.Size(0))
        {
            var (n, n2) = (vectors.Size(0), vectors2.Size(0));
            vectors.Dispose();
            vectors2.Dispose();
            throw new UserInputException(path, $"textual-inversion embedding: clip_l has {n} vectors but clip_g {n2}");
        }
        return new TextualInversionEmbedding(name, vectors, vectors2);
    }

    // NaN or infinite vectors would draw a black image; refused naming the file (WeightChecks).
    private static Tensor Finite(string path, string what, Tensor vectors)
    {
        try
        {
            WeightChecks.RequireFinite(path, what, vectors);
            return vectors;
        }
        catch
        {
            vectors.Dispose();
            throw;
        }
    }

    // diffusers' concept files may hold a single 1-D vector; every layout is used as [n, width].
    private static Tensor AsMatrix(Tensor t)
    {
        if (t.Dim == 2) return t;
        if (t.Dim != 1) throw new UserInputException(null, $"an embedding must be [vectors, width], got [{string.Join(", ", t.Shape)}]");
        var m = t.Unsqueeze(0);
        t.Dispose();
        return m;
    }

    public void Dispose()
    {
        Vectors.Dispose();
        Vectors2?.Dispose();
    }
}
