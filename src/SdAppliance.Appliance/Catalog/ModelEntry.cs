namespace SdAppliance.Appliance.Catalog;

/// <summary>What the catalog holds: base models and the networks that adapt them.</summary>
public enum ModelKind
{
    /// <summary>A base model: a diffusers folder, a <c>.safetensors</c> or <c>.ckpt</c> file in <c>models/</c>.</summary>
    Checkpoint,

    /// <summary>A LoRA in <c>models/lora/</c>.</summary>
    Lora,

    /// <summary>A textual-inversion embedding in <c>models/embeddings/</c>.</summary>
    Embedding,

    /// <summary>An A1111 hypernetwork in <c>models/hypernetworks/</c>.</summary>
    Hypernetwork,
}

/// <summary>
/// One model in the catalog, with what A1111 shows of it. For a checkpoint, <see cref="Title"/> is A1111's
/// <c>name.safetensors [shorthash]</c> (a diffusers folder, which A1111 has no hash for, is titled by its name) and
/// <see cref="Name"/> A1111's <c>model_name</c>; for a LoRA, embedding or hypernetwork both are the file name without
/// its extension, the name a prompt uses (<c>&lt;lora:NAME:1&gt;</c>).
/// </summary>
/// <param name="RelativePath">The path relative to its kind's folder, with '/' between folders (A1111's <c>name</c>); a folder's name for a diffusers folder.</param>
/// <param name="Path">The full path on the server, what the engine loads.</param>
/// <param name="Family">"SD 1.x", "SD 2.x", "SDXL" or "SDXL refiner"; null where it cannot be told (LoRAs, embeddings and hypernetworks are not examined for it).</param>
/// <param name="PredictionType"><c>epsilon</c> or <c>v_prediction</c>; null for an SD 2.x single file without its <c>.yaml</c> (told when it is loaded) and for networks.</param>
/// <param name="ShortHash">A1111's short hash: a checkpoint's first 10 hex digits of its SHA-256, a LoRA's or an embedding's 12 (its "Lora hashes", "TI hashes"); null for folders and hypernetworks.</param>
/// <param name="Sha256">The SHA-256 of the whole file; null for folders.</param>
/// <param name="Metadata">A safetensors file's <c>__metadata__</c> (a kohya LoRA's <c>ss_*</c> fields); empty otherwise.</param>
/// <param name="Vectors">An embedding's number of vectors (tokens it stands for); null for other kinds.</param>
/// <param name="Dimension">An embedding's vector width (768 for SD 1.x); null for other kinds.</param>
/// <param name="OwnerId">Who imported it; null for files dropped in by hand and the demo model.</param>
/// <param name="IsPrivate">Visible to its owner and admins only.</param>
/// <param name="IsDemo">The demo model of the application, always listed, never deleted.</param>
public sealed record ModelEntry(
    ModelKind Kind,
    string Name,
    string Title,
    string RelativePath,
    string Path,
    long SizeBytes,
    DateTime ModifiedUtc,
    string? Family,
    string? PredictionType,
    string? ShortHash,
    string? Sha256,
    IReadOnlyDictionary<string, string> Metadata,
    int? Vectors,
    int? Dimension,
    string? OwnerId,
    bool IsPrivate,
    bool IsDemo)
{
    /// <summary>Why the file cannot be used (not a model of its kind, unreadable); null when it can. Such a file is listed so it can be found and deleted.</summary>
    public string? Problem { get; init; }

    /// <summary>
    /// How a base model is stored: <c>diffusers</c> (a folder of weights), <c>onnx</c> (an ONNX export's folder),
    /// <c>safetensors</c> or <c>ckpt</c>; null for networks.
    /// </summary>
    public string? Format { get; init; }

    /// <summary>The engines that can run a base model (<c>libtorch</c>, <c>onnx</c>: a folder may hold both); empty for networks.</summary>
    public IReadOnlyList<string> Backends { get; init; } = [];

    /// <summary>
    /// The names A1111 finds a checkpoint by (its <c>CheckpointInfo.ids</c>): the title, the relative path, the model name,
    /// the file name without extension, the short hash and the SHA-256, each alone or with the short hash in brackets.
    /// </summary>
    public IEnumerable<string> Aliases
    {
        get
        {
            yield return Title;
            yield return RelativePath;
            yield return Name;
            var bare = System.IO.Path.GetFileNameWithoutExtension(RelativePath);
            yield return bare;
            if (ShortHash is null) yield break;
            yield return ShortHash;
            yield return $"{bare} [{ShortHash}]";
            if (Sha256 is not null) yield return Sha256;
        }
    }
}
