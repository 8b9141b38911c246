using SdAppliance.Onnx.Graphs;

namespace SdAppliance.Onnx.Export;

/// <summary>Which ONNX Stable Diffusion app's conventions an export follows (they differ in input types and the VAE encoder).</summary>
public enum OnnxLayout
{
    /// <summary>Hugging Face optimum: int64 <c>input_ids</c>, a rank-0 <c>timestep</c>, a VAE encoder that outputs <c>latent_parameters</c> (mean and log-variance).</summary>
    Optimum,

    /// <summary>diffusers' ONNX pipeline: int32 <c>input_ids</c>, <c>timestep</c> of shape [B], a VAE encoder that samples inside the graph (<c>latent_sample</c>).</summary>
    Diffusers,
}

/// <summary>The precision of the exported weights and graph.</summary>
public enum OnnxPrecision
{
    Float32,

    /// <summary>fp16 weights and arithmetic (half the size; for CUDA).</summary>
    Float16,
}

/// <summary>How a pipeline is exported to ONNX.</summary>
public sealed record OnnxExportOptions
{
    public OnnxLayout Layout { get; init; } = OnnxLayout.Optimum;
    public OnnxPrecision Precision { get; init; } = OnnxPrecision.Float32;

    /// <summary>Attention as plain operators (every runtime) or ONNX Runtime's fused kernel.</summary>
    public AttentionForm Attention { get; init; } = AttentionForm.Standard;

    /// <summary>The opset written (17 or newer).</summary>
    public int Opset { get; init; } = OnnxGraph.DefaultOpset;

    /// <summary>Replace a folder already at the export's path (as a whole, at the end); without it such a folder is refused.</summary>
    public bool Overwrite { get; init; }

    /// <summary>Where a single-file model's shared tokenizer is found (<c>ROOT/models/tokenizers/</c>), as the model was loaded with.</summary>
    public IReadOnlyList<string> SearchRoots { get; init; } = [];
}
