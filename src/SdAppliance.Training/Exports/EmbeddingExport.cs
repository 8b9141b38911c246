using SdAppliance.Formats.Adapters;
using SdAppliance.Models.Adapters;
using SdAppliance.Torch;
using SdAppliance.Training.Networks;

namespace SdAppliance.Training.Exports;

/// <summary>
/// A trained textual-inversion embedding in the layouts other tools load (<see cref="TextualInversionFile"/>,
/// FORMATS §4.5), float32 and written atomically. Each loads back through <see cref="TextualInversionEmbedding.Load"/>.
/// </summary>
public static class EmbeddingExport
{
    /// <summary><c>{"emb_params": [n, width]}</c> (kohya's layout, read by A1111); SDXL <c>{"clip_l": …, "clip_g": …}</c>.</summary>
    public static void SaveA1111Safetensors(string path, TrainableEmbedding embedding)
    {
        using var shared = Shared(embedding);
        SaveA1111Safetensors(path, shared);
    }

    public static void SaveA1111Safetensors(string path, TextualInversionEmbedding embedding)
    {
        var (v, v2) = Host(embedding);
        TextualInversionFile.WriteSafetensors(path, v.Bytes, v.Shape, v2?.Bytes, v2?.Shape);
    }

    /// <summary>A1111's <c>.pt</c>, with the base model's A1111 short hash and name (null when the model has no single file).</summary>
    public static void SaveA1111Pt(string path, TrainableEmbedding embedding, int step, string? sdCheckpoint, string? sdCheckpointName)
    {
        using var shared = Shared(embedding);
        SaveA1111Pt(path, shared, step, sdCheckpoint, sdCheckpointName);
    }

    public static void SaveA1111Pt(string path, TextualInversionEmbedding embedding, int step, string? sdCheckpoint, string? sdCheckpointName)
    {
        var (v, v2) = Host(embedding);
        TextualInversionFile.WriteA1111Pt(path, embedding.Name, step, sdCheckpoint, sdCheckpointName, v.Bytes, v.Shape, v2?.Bytes, v2?.Shape);
    }

    /// <summary>diffusers' <c>learned_embeds.safetensors</c> (and <c>learned_embeds_2</c> for SDXL's second encoder).</summary>
    public static void SaveDiffusers(string path, TrainableEmbedding embedding)
    {
        using var shared = Shared(embedding);
        SaveDiffusers(path, shared);
    }

    public static void SaveDiffusers(string path, TextualInversionEmbedding embedding)
    {
        var (v, v2) = Host(embedding);
        TextualInversionFile.WriteDiffusers(path, embedding.Name, v.Bytes, v.Shape, v2?.Bytes, v2?.Shape);
    }

    // The embedding object over the trainable tensors; disposing it frees only its own handles.
    private static TextualInversionEmbedding Shared(TrainableEmbedding embedding)
    {
        ArgumentNullException.ThrowIfNull(embedding);
        return embedding.AsEmbedding();
    }

    private sealed record HostVectors(byte[] Bytes, long[] Shape);

    /// <summary>The vectors as float32 bytes on the host.</summary>
    private static (HostVectors Vectors, HostVectors? Vectors2) Host(TextualInversionEmbedding embedding)
    {
        ArgumentNullException.ThrowIfNull(embedding);
        using var noGrad = Autograd.NoGrad();
        static HostVectors Copy(Tensor t)
        {
            using var host = t.To(Device.Cpu, DType.Float32, copy: true);
            return new HostVectors(host.ToBytes(), host.Shape);
        }
        return (Copy(embedding.Vectors), embedding.Vectors2 is null ? null : Copy(embedding.Vectors2));
    }
}
