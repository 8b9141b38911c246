using SdAppliance.Formats.Pickle;

namespace SdAppliance.Formats.Adapters;

/// <summary>
/// Textual-inversion embedding files (FORMATS §4.5): where the vectors are in the layouts users bring, A1111
/// (<c>string_to_param</c>), kohya (<c>emb_params</c>), OneTrainer (<c>emp_params</c>), diffusers
/// (<c>learned_embeds</c>: one key named after the token) and SDXL (<c>clip_l</c> + <c>clip_g</c>), and the
/// layouts other tools load, written atomically from float32 [n, width] tensors.
/// </summary>
public static class TextualInversionFile
{
    /// <summary>A1111's placeholder for the single term of a <c>.pt</c> embedding: the id of "*" in CLIP's vocabulary.</summary>
    public const long A1111StarTokenId = 265;

    /// <summary>
    /// The keys of the vectors in a file opened with <see cref="TensorFile.OpenNested"/>: the first (or only)
    /// text encoder's, and SDXL's second (<c>clip_g</c>) or null.
    /// </summary>
    /// <exception cref="InvalidDataException">The file holds no embedding, or several terms.</exception>
    public static (string Vectors, string? Vectors2) FindVectors(TensorFile file)
    {
        ArgumentNullException.ThrowIfNull(file);
        var shapes = file.Shapes;
        if (shapes.ContainsKey("clip_l") && shapes.ContainsKey("clip_g")) return ("clip_l", "clip_g");
        var stringToParam = shapes.Keys.Where(k => k.StartsWith("string_to_param.", StringComparison.Ordinal)).ToList();
        if (stringToParam.Count > 1)
            throw new UserInputException(file.Path, $"the textual-inversion file has multiple terms in it ({string.Join(", ", stringToParam)}); A1111 embeddings hold one");
        foreach (var key in stringToParam.Concat(["emb_params", "emp_params"]))
            if (shapes.ContainsKey(key)) return (key, null);
        var floating = shapes.Keys.Where(k => file.DTypeOf(k) is SafetensorsDType.F16 or SafetensorsDType.BF16 or SafetensorsDType.F32 or SafetensorsDType.F64).ToList();
        if (floating.Count == 1) return (floating[0], null);
        throw new UserInputException(file.Path, $"is not a textual-inversion embedding: expected 'string_to_param', 'emb_params', 'clip_l' + 'clip_g', or a single tensor, found {string.Join(", ", shapes.Keys)}");
    }

    /// <summary><c>{"emb_params": [n, width]}</c> (kohya's layout, read by A1111); SDXL <c>{"clip_l": …, "clip_g": …}</c>.</summary>
    public static void WriteSafetensors(string path, byte[] vectors, long[] shape, byte[]? vectors2 = null, long[]? shape2 = null)
    {
        List<SafetensorsTensor> tensors = vectors2 is null
            ? [new("emb_params", SafetensorsDType.F32, shape, vectors)]
            : [new("clip_l", SafetensorsDType.F32, shape, vectors), new("clip_g", SafetensorsDType.F32, shape2!, vectors2)];
        SafetensorsFile.Write(path, tensors);
    }

    /// <summary>
    /// A1111's <c>Embedding.save</c> layout: <c>{"string_to_token": {"*": 265}, "string_to_param": {"*": [n, width]},
    /// "name", "step", "sd_checkpoint", "sd_checkpoint_name"}</c>. A1111 has no SDXL <c>.pt</c> layout; an SDXL
    /// embedding is written with <c>clip_l</c>/<c>clip_g</c> in place of <c>string_to_param</c>, which A1111's
    /// loader accepts from any file. <paramref name="sdCheckpoint"/> is the base model's A1111 short hash.
    /// </summary>
    public static void WriteA1111Pt(string path, string name, int step, string? sdCheckpoint, string? sdCheckpointName,
        byte[] vectors, long[] shape, byte[]? vectors2 = null, long[]? shape2 = null)
    {
        var root = new PickleDict();
        if (vectors2 is null)
        {
            var token = new PickleDict();
            token.Set("*", A1111StarTokenId);
            var param = new PickleDict();
            param.Set("*", new SafetensorsTensor("*", SafetensorsDType.F32, shape, vectors));
            root.Set("string_to_token", token);
            root.Set("string_to_param", param);
        }
        else
        {
            root.Set("clip_l", new SafetensorsTensor("clip_l", SafetensorsDType.F32, shape, vectors));
            root.Set("clip_g", new SafetensorsTensor("clip_g", SafetensorsDType.F32, shape2!, vectors2));
        }
        root.Set("name", name);
        root.Set("step", (long)step);
        root.Set("sd_checkpoint", sdCheckpoint);
        root.Set("sd_checkpoint_name", sdCheckpointName);
        TorchSaveWriter.Write(path, root);
    }

    /// <summary>
    /// diffusers' <c>save_progress</c>: <c>{token: [n, width]}</c> with metadata <c>{"format": "pt"}</c>. For SDXL the
    /// second encoder's vectors go to <see cref="SecondEncoderPath"/>, as diffusers' SDXL script writes them.
    /// </summary>
    public static void WriteDiffusers(string path, string token, byte[] vectors, long[] shape, byte[]? vectors2 = null, long[]? shape2 = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var metadata = new Dictionary<string, string> { ["format"] = "pt" };
        SafetensorsFile.Write(path, [new SafetensorsTensor(token, SafetensorsDType.F32, shape, vectors)], metadata);
        if (vectors2 is not null)
            SafetensorsFile.Write(SecondEncoderPath(path), [new SafetensorsTensor(token, SafetensorsDType.F32, shape2!, vectors2)], metadata);
    }

    /// <summary>Where <see cref="WriteDiffusers"/> puts SDXL's second-encoder vectors: "_2" before the extension.</summary>
    public static string SecondEncoderPath(string path) =>
        Path.Combine(Path.GetDirectoryName(path) ?? "", Path.GetFileNameWithoutExtension(path) + "_2" + Path.GetExtension(path));
}
