namespace SdAppliance.Formats.Checkpoints;

/// <summary>Stable Diffusion model families the single-file layout comes in.</summary>
public enum ModelFamily
{
    /// <summary>Not recognised.</summary>
    Unknown,

    /// <summary>SD 1.x: CLIP ViT-L text encoder under <c>cond_stage_model.transformer.</c>.</summary>
    V1,

    /// <summary>SD 2.x: OpenCLIP ViT-H text encoder under <c>cond_stage_model.model.</c>.</summary>
    V2,

    /// <summary>SDXL base: CLIP ViT-L and OpenCLIP bigG under <c>conditioner.embedders.0/1.</c>.</summary>
    XlBase,

    /// <summary>
    /// SDXL refiner: only OpenCLIP bigG, under <c>conditioner.embedders.0.model.</c> (diffusers' <c>text_encoder_2</c>, no
    /// <c>text_encoder</c>); its UNet's time ids carry an aesthetic score in place of the target size.
    /// </summary>
    XlRefiner,
}

/// <summary>Component names of the diffusers folder layout, and the empty name of a single file.</summary>
public static class ModelComponents
{
    /// <summary>The original single-file ("ldm") layout.</summary>
    public const string SingleFile = "";

    /// <summary>UNet2DConditionModel.</summary>
    public const string Unet = "unet";

    /// <summary>AutoencoderKL.</summary>
    public const string Vae = "vae";

    /// <summary>The (first) CLIP text encoder.</summary>
    public const string TextEncoder = "text_encoder";

    /// <summary>SDXL's OpenCLIP bigG text encoder with projection.</summary>
    public const string TextEncoder2 = "text_encoder_2";
}

/// <summary>A tensor name within a component (<see cref="ModelComponents"/>); the component is empty for a single file.</summary>
public readonly record struct TensorKey(string Component, string Name)
{
    /// <inheritdoc/>
    public override string ToString() => Component.Length == 0 ? Name : $"{Component}/{Name}";
}

/// <summary>How a target tensor is made from its source(s). Each is a byte operation on row-major data.</summary>
public enum TensorOp
{
    /// <summary>The source's bytes unchanged, same shape.</summary>
    Copy,

    /// <summary>The source's bytes unchanged, another shape of the same size.</summary>
    Reshape,

    /// <summary>Part <see cref="TensorRecipe.Part"/> of <see cref="TensorRecipe.Parts"/> equal pieces along dimension 0 (a byte range).</summary>
    Slice,

    /// <summary>The sources one after the other along dimension 0 (their bytes concatenated).</summary>
    Concat,

    /// <summary>The transpose of a 2-D source (an element-wise copy).</summary>
    Transpose,
}

/// <summary>One tensor of the target layout and how to make it from tensors of the source layout.</summary>
/// <param name="Target">Component and name in the target layout.</param>
/// <param name="Shape">Its shape.</param>
/// <param name="Op">The operation.</param>
/// <param name="Sources">The source tensors (several only for <see cref="TensorOp.Concat"/>).</param>
/// <param name="SourceShape">Shape of each source.</param>
/// <param name="Part">For <see cref="TensorOp.Slice"/>: which piece.</param>
/// <param name="Parts">For <see cref="TensorOp.Slice"/>: how many pieces.</param>
public sealed record TensorRecipe(TensorKey Target, IReadOnlyList<long> Shape, TensorOp Op, IReadOnlyList<TensorKey> Sources, IReadOnlyList<long> SourceShape, int Part = 0, int Parts = 1)
{
    /// <summary>Makes the target's bytes from the sources' row-major bytes (in <see cref="Sources"/> order).</summary>
    /// <param name="sources">Each source's data.</param>
    /// <param name="elementSize">Bytes per element (all sources share one dtype).</param>
    /// <exception cref="ArgumentException">A source has the wrong length for its shape.</exception>
    public byte[] Apply(IReadOnlyList<byte[]> sources, int elementSize)
    {
        ArgumentNullException.ThrowIfNull(sources);
        if (sources.Count != Sources.Count)
            throw new ArgumentException($"{Target} needs {Sources.Count} sources, got {sources.Count}.", nameof(sources));
        var sourceBytes = Count(SourceShape) * elementSize;
        for (var i = 0; i < sources.Count; i++)
        {
            if (sources[i].Length != sourceBytes)
                throw new ArgumentException($"Source {Sources[i]} of {Target} should be {sourceBytes} bytes ([{string.Join(", ", SourceShape)}] x {elementSize}), got {sources[i].Length}.", nameof(sources));
        }
        switch (Op)
        {
            case TensorOp.Copy:
            case TensorOp.Reshape:
                return sources[0];
            case TensorOp.Slice:
                var piece = sources[0].Length / Parts;
                return sources[0].AsSpan(Part * piece, piece).ToArray();
            case TensorOp.Concat:
                var joined = new byte[sourceBytes * sources.Count];
                for (var i = 0; i < sources.Count; i++)
                    sources[i].CopyTo(joined, i * sourceBytes);
                return joined;
            case TensorOp.Transpose:
                return Transpose(sources[0], (int)SourceShape[0], (int)SourceShape[1], elementSize);
            default:
                throw new InvalidOperationException($"Unknown operation {Op}.");
        }
    }

    private static long Count(IReadOnlyList<long> shape) => shape.Aggregate(1L, (a, d) => a * d);

    private static byte[] Transpose(byte[] source, int rows, int columns, int size)
    {
        var result = new byte[source.Length];
        // Tiles keep both the reads and the writes within cache lines.
        const int Tile = 32;
        for (var r0 = 0; r0 < rows; r0 += Tile)
        {
            for (var c0 = 0; c0 < columns; c0 += Tile)
            {
                for (var r = r0; r < Math.Min(r0 + Tile, rows); r++)
                {
                    for (var c = c0; c < Math.Min(c0 + Tile, columns); c++)
                        source.AsSpan((r * columns + c) * size, size).CopyTo(result.AsSpan((c * rows + r) * size, size));
                }
            }
        }
        return result;
    }
}

/// <summary>
/// The result of mapping one layout's tensor names to another's: what to make and how, which
/// source tensors are deliberately dropped (EMA copies, training buffers, unused text-encoder
/// parts), and which no rule knows.
/// </summary>
public sealed class KeyMapping
{
    internal KeyMapping(ModelFamily family, List<TensorRecipe> tensors, List<TensorKey> ignored, List<TensorKey> unmapped)
    {
        Family = family;
        Tensors = tensors;
        Ignored = ignored;
        Unmapped = unmapped;
    }

    /// <summary>The family the mapping was made for.</summary>
    public ModelFamily Family { get; }

    /// <summary>The target tensors, in source order.</summary>
    public IReadOnlyList<TensorRecipe> Tensors { get; }

    /// <summary>Source tensors dropped on purpose (see the remarks of <see cref="LdmKeyMap"/>).</summary>
    public IReadOnlyList<TensorKey> Ignored { get; }

    /// <summary>Source tensors no rule maps; a loader should report them.</summary>
    public IReadOnlyList<TensorKey> Unmapped { get; }

    /// <summary>The target components, in order of first appearance.</summary>
    public IEnumerable<string> Components => Tensors.Select(t => t.Target.Component).Distinct();

    /// <summary>The target tensors of <paramref name="component"/>.</summary>
    public IEnumerable<TensorRecipe> Component(string component) => Tensors.Where(t => t.Target.Component == component);

    /// <summary>Makes the bytes of <paramref name="recipe"/>'s target from source tensors fetched by <paramref name="fetch"/> (dtype and row-major bytes).</summary>
    /// <exception cref="InvalidDataException">The sources of a concatenation have different dtypes.</exception>
    public static (SafetensorsDType DType, byte[] Bytes) Materialize(TensorRecipe recipe, Func<TensorKey, (SafetensorsDType DType, byte[] Bytes)> fetch)
    {
        ArgumentNullException.ThrowIfNull(recipe);
        ArgumentNullException.ThrowIfNull(fetch);
        var fetched = recipe.Sources.Select(fetch).ToList();
        var dtype = fetched[0].DType;
        if (fetched.Any(f => f.DType != dtype))
            throw new InvalidDataException($"The sources of {recipe.Target} have different dtypes ({string.Join(", ", fetched.Select(f => f.DType.ToHeaderName()))}).");
        return (dtype, recipe.Apply([.. fetched.Select(f => f.Bytes)], dtype.ElementSize()));
    }
}
