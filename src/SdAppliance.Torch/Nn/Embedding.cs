namespace SdAppliance.Torch.Nn;

/// <summary>A lookup table of <see cref="NumEmbeddings"/> vectors, as <c>nn.Embedding</c>; initialised N(0, 1).</summary>
public sealed class Embedding : Module<Tensor, Tensor>
{
    public Embedding(long numEmbeddings, long embeddingDim, Device? device = null, DType dtype = DType.Float32, Generator? generator = null)
    {
        NumEmbeddings = numEmbeddings;
        EmbeddingDim = embeddingDim;
        var w = torch.Empty([numEmbeddings, embeddingDim], dtype, device);
        Init.Normal_(w, 0, 1, generator);
        RegisterParameter("weight", w);
    }

    public long NumEmbeddings { get; }
    public long EmbeddingDim { get; }
    public Tensor Weight => GetParameter("weight")!;

    /// <summary>The rows picked by integer <paramref name="input"/>: shape input.shape + [embedding_dim].</summary>
    public override Tensor Forward(Tensor input) => Functional.Embedding(input, Weight);

    protected override string ExtraRepr() => $"{NumEmbeddings}, {EmbeddingDim}";
}
