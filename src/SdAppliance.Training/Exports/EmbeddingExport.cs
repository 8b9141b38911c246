using SdAppliance.Formats;
using SdAppliance.Formats.Pickle;
using SdAppliance.Models.Adapters;
using SdAppliance.Torch;
using SdAppliance.Torch.Serialization;
using SdAppliance.Training.Networks;

namespace SdAppliance.Training.Exports;

/// <summary>
/// Textual-inversion embeddings in the layouts other tools load (FORMATS §4.5), all float32 and
/// written atomically: A1111/kohya <c>.safetensors</c>, A1111 <c>.pt</c>, and diffusers'
/// <c>learned_embeds.safetensors</c>. Each loads back through <see cref="TextualInversionEmbedding.Load"/>.
/// </summary>
public static class EmbeddingExport
{
    /// <summary>A1111's placeholder for the single term of a <c>.pt</c> embedding: the id of "*" in CLIP's vocabulary.</summary>
    public const long A1111StarTokenId = 265;

    /// <summary><c>{"emb_params": [n, width]}</c> (kohya's layout, read by A1111); SDXL <c>{"clip_l": …, "clip_g": …}</c>.</summary>
    public static void SaveA1111Safetensors(string path, TrainableEmbedding embedding)
    {
        using var shared = Shared(embedding);
        SaveA1111Safetensors(path, shared);
    }

    public static void SaveA1111Safetensors(string path, TextualInversionEmbedding embedding)
    {
        ArgumentNullException.ThrowIfNull(embedding);
        using var tensors = Host(embedding);
        var entries = new List<KeyValuePair<string, Tensor>>();
        if (tensors.Vectors2 is null)
        {
            entries.Add(new("emb_params", tensors.Vectors));
        }
        else
        {
            entries.Add(new("clip_l", tensors.Vectors));
            entries.Add(new("clip_g", tensors.Vectors2));
        }
        Safetensors.Save(path, entries);
    }

    /// <summary>
    /// A1111's <c>Embedding.save</c> layout: <c>{"string_to_token": {"*": 265}, "string_to_param": {"*": [n, width]},
    /// "name", "step", "sd_checkpoint", "sd_checkpoint_name"}</c>. A1111 has no SDXL <c>.pt</c> layout; an SDXL
    /// embedding is written with <c>clip_l</c>/<c>clip_g</c> in place of <c>string_to_param</c>, which A1111's
    /// loader accepts from any file.
    /// </summary>
    public static void SaveA1111Pt(string path, TrainableEmbedding embedding, int step, string? sdCheckpoint, string? sdCheckpointName)
    {
        using var shared = Shared(embedding);
        SaveA1111Pt(path, shared, step, sdCheckpoint, sdCheckpointName);
    }

    public static void SaveA1111Pt(string path, TextualInversionEmbedding embedding, int step, string? sdCheckpoint, string? sdCheckpointName)
    {
        ArgumentNullException.ThrowIfNull(embedding);
        using var tensors = Host(embedding);
        var root = new PickleDict();
        if (tensors.Vectors2 is null)
        {
            var token = new PickleDict();
            token.Set("*", A1111StarTokenId);
            var param = new PickleDict();
            param.Set("*", Stored("*", tensors.Vectors));
            root.Set("string_to_token", token);
            root.Set("string_to_param", param);
        }
        else
        {
            root.Set("clip_l", Stored("clip_l", tensors.Vectors));
            root.Set("clip_g", Stored("clip_g", tensors.Vectors2));
        }
        root.Set("name", embedding.Name);
        root.Set("step", (long)step);
        root.Set("sd_checkpoint", sdCheckpoint);
        root.Set("sd_checkpoint_name", sdCheckpointName);
        TorchSaveWriter.Write(path, root);
    }

    /// <summary>
    /// diffusers' <c>save_progress</c>: <c>{placeholder_token: [n, width]}</c> with metadata <c>{"format": "pt"}</c>.
    /// For SDXL the second encoder's vectors go to a sibling file with "_2" before the extension
    /// (<c>learned_embeds_2.safetensors</c>), as diffusers' SDXL script writes them.
    /// </summary>
    public static void SaveDiffusers(string path, TrainableEmbedding embedding)
    {
        using var shared = Shared(embedding);
        SaveDiffusers(path, shared);
    }

    public static void SaveDiffusers(string path, TextualInversionEmbedding embedding)
    {
        ArgumentNullException.ThrowIfNull(embedding);
        ArgumentException.ThrowIfNullOrEmpty(path);
        using var tensors = Host(embedding);
        var metadata = new Dictionary<string, string> { ["format"] = "pt" };
        Safetensors.Save(path, [new KeyValuePair<string, Tensor>(embedding.Name, tensors.Vectors)], metadata);
        if (tensors.Vectors2 is not null)
            Safetensors.Save(SecondEncoderPath(path), [new KeyValuePair<string, Tensor>(embedding.Name, tensors.Vectors2)], metadata);
    }

    /// <summary>Where <see cref="SaveDiffusers(string, TextualInversionEmbedding)"/> puts SDXL's second-encoder vectors.</summary>
    public static string SecondEncoderPath(string path) =>
        Path.Combine(Path.GetDirectoryName(path) ?? "", Path.GetFileNameWithoutExtension(path) + "_2" + Path.GetExtension(path));

    // The embedding object over the trainable tensors; disposing it frees only its own handles.
    private static TextualInversionEmbedding Shared(TrainableEmbedding embedding)
    {
        ArgumentNullException.ThrowIfNull(embedding);
        return embedding.AsEmbedding();
    }

    private static SafetensorsTensor Stored(string name, Tensor t) => new(name, SafetensorsDType.F32, t.Shape, t.ToBytes());

    private static HostCopy Host(TextualInversionEmbedding embedding)
    {
        using var noGrad = Autograd.NoGrad();
        var v = embedding.Vectors.To(Device.Cpu, DType.Float32, copy: true);
        var v2 = embedding.Vectors2?.To(Device.Cpu, DType.Float32, copy: true);
        return new HostCopy(v, v2);
    }

    /// <summary>Detached float32 CPU copies of an embedding's vectors.</summary>
    private sealed record HostCopy(Tensor Vectors, Tensor? Vectors2) : IDisposable
    {
        public void Dispose()
        {
            Vectors.Dispose();
            Vectors2?.Dispose();
        }
    }
}
