using SdAppliance.Models.Adapters;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;
using SdAppliance.Training.Exports;
using SdAppliance.Training.Networks;

namespace SdAppliance.Training.Methods;

/// <summary>Textual inversion: only the new token's vectors change; the rest of the embedding matrix stays bit-identical.</summary>
public sealed class TextualInversionMethod : TrainingMethod
{
    private readonly TrainableEmbedding embedding;
    private readonly TextualInversionEmbedding view;

    public TextualInversionMethod(StableDiffusionModel model, TrainingConfig config) : base(model, config)
    {
        embedding = TrainableEmbedding.Create(model, config.PlaceholderToken!, config.InitializerToken!, config.NumVectors);
        view = embedding.AsEmbedding();
    }

    public override IReadOnlyList<(IReadOnlyList<Tensor>, double)> ParameterGroups =>
        [(embedding.Vectors2 is null ? [embedding.Vectors] : [embedding.Vectors, embedding.Vectors2], Config.ScaledLearningRate())];

    public override bool TrainsTextConditioning => true;

    public override IReadOnlyList<TextualInversionEmbedding> Embeddings => [view];

    public override IReadOnlyDictionary<string, Tensor> TrainedState()
    {
        var state = new Dictionary<string, Tensor> { ["vectors"] = embedding.Vectors };
        if (embedding.Vectors2 is not null) state["vectors2"] = embedding.Vectors2;
        return state;
    }

    public override IReadOnlyList<string> Export(string runFolder, string name, long step)
    {
        var token = embedding.PlaceholderToken;
        var safetensors = Path.Combine(runFolder, token + ".safetensors");
        var pt = Path.Combine(runFolder, token + ".pt");
        var diffusers = Path.Combine(runFolder, "learned_embeds.safetensors");
        EmbeddingExport.SaveA1111Safetensors(safetensors, view);
        EmbeddingExport.SaveA1111Pt(pt, view, (int)step, A1111CheckpointHash(), Model.Name);
        EmbeddingExport.SaveDiffusers(diffusers, view);
        return [safetensors, pt, diffusers];
    }

    public override void Dispose() => embedding.Dispose();
}
