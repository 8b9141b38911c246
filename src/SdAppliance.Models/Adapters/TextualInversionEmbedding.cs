using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Formats.Pickle;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;
using SdAppliance.Torch.Serialization;

namespace SdAppliance.Models.Adapters;

/// <summary>
/// A textual-inversion embedding: <see cref="Vectors"/> [n, width] replace the tokens of its
/// <see cref="Name"/> in a prompt (SDXL files carry one set per text encoder: <c>clip_l</c> and
/// <c>clip_g</c>, the latter in <see cref="Vectors2"/>). Read from the layouts users bring:
/// A1111 (<c>string_to_param</c>), kohya (<c>emb_params</c>), OneTrainer (<c>emp_params</c>),
/// diffusers (<c>learned_embeds</c>: one key named after the token) and SDXL (<c>clip_l</c> + <c>clip_g</c>).
/// </summary>
public sealed class TextualInversionEmbedding(string name, Tensor vectors, Tensor? vectors2 = null) : IDisposable
{
    public string Name { get; } = name;

    /// <summary>[n, width] for the (first) text encoder.</summary>
    public Tensor Vectors { get; } = vectors;

    /// <summary>[n, width2] for SDXL's second text encoder, or null.</summary>
    public Tensor? Vectors2 { get; } = vectors2;

    public int VectorCount => (int)Vectors.Size(0);

    /// <summary>Loads the embedding in <paramref name="path"/>; its name is the file name, as A1111 uses it.</summary>
    public static TextualInversionEmbedding Load(string path)
    {
        var name = Path.GetFileNameWithoutExtension(path);
        var tensors = Path.GetExtension(path).ToLowerInvariant() switch
        {
            ".safetensors" => Safetensors.Load(path),
            ".pt" or ".bin" => ReadPickled(path),
            var ext => throw new UserInputException(path, $"{ext} is not a textual-inversion embedding format", "use .safetensors, .pt or .bin"),
        };
        var embedding = FromTensors(path, name, tensors);
        try
        {
            WeightChecks.RequireFinite(path, "the vectors", embedding.Vectors);
            if (embedding.Vectors2 is { } second) WeightChecks.RequireFinite(path, "the second encoder's vectors", second);
        }
        catch
        {
            embedding.Dispose();
            throw;
        }
        return embedding;
    }

    /// <summary>The tensors of a torch.save'd embedding (through the restricted unpickler), keyed by their dotted path in its dicts.</summary>
    private static Dictionary<string, Tensor> ReadPickled(string path)
    {
        using var checkpoint = TorchCheckpoint.Open(path);
        var found = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        void Walk(object? node, string prefix, int depth)
        {
            if (node is TorchTensor t)
                found[prefix] = torch.FromBytes(t.ReadBytes(), t.Shape.ToArray(), Safetensors.ToTorch(t.DType, prefix, path));
            else if (node is PickleDict dict && depth < 3)
                foreach (var (key, value) in dict)
                    if (key is string k) Walk(value, prefix.Length == 0 ? k : prefix + "." + k, depth + 1);
        }
        Walk(checkpoint.Root, "", 0);
        return found;
    }

    /// <summary>Interprets the tensors of an embedding file (any supported layout).</summary>
    public static TextualInversionEmbedding FromTensors(string path, string name, IReadOnlyDictionary<string, Tensor> tensors)
    {
        Tensor Take(string key) => AsMatrix(tensors[key]);
        void DisposeAllBut(params string[] keep)
        {
            foreach (var (k, t) in tensors)
                if (!keep.Contains(k)) t.Dispose();
        }

        if (tensors.ContainsKey("clip_l") && tensors.ContainsKey("clip_g"))
        {
            DisposeAllBut("clip_l", "clip_g");
            var l = Take("clip_l");
            var g = Take("clip_g");
            if (l.Size(0) != g.Size(0))
                throw new UserInputException(path, $"textual-inversion embedding: clip_l has {l.Size(0)} vectors but clip_g {g.Size(0)}");
            return new TextualInversionEmbedding(name, l, g);
        }
        var stringToParam = tensors.Keys.Where(k => k.StartsWith("string_to_param.", StringComparison.Ordinal)).ToList();
        if (stringToParam.Count > 1)
            throw new UserInputException(path, $"the textual-inversion file has multiple terms in it ({string.Join(", ", stringToParam)}); A1111 embeddings hold one");
        foreach (var key in stringToParam.Concat(["emb_params", "emp_params"]))
            if (tensors.ContainsKey(key))
            {
                DisposeAllBut(key);
                return new TextualInversionEmbedding(name, Take(key));
            }
        var floating = tensors.Where(kv => kv.Value.DType.IsFloatingPoint()).ToList();
        if (floating.Count == 1)
        {
            DisposeAllBut(floating[0].Key);
            return new TextualInversionEmbedding(name, Take(floating[0].Key));
        }
        DisposeAllBut();
        throw new UserInputException(path,
            $"is not a textual-inversion embedding: expected 'string_to_param', 'emb_params', 'clip_l' + 'clip_g', or a single tensor, found {string.Join(", ", tensors.Keys)}");
    }

    // diffusers' concept files may hold a single 1-D vector; every layout is used as [n, width].
    private static Tensor AsMatrix(Tensor t)
    {
        if (t.Dim == 2) return t;
        if (t.Dim != 1) throw new InvalidDataException($"an embedding must be [vectors, width], got [{string.Join(", ", t.Shape)}]");
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
