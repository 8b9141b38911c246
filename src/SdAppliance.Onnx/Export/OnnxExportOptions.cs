using SdAppliance.Formats;
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

    /// <summary>The layouts by the names the command line, the API and the UI use.</summary>
    public static IReadOnlyDictionary<string, OnnxLayout> LayoutNames { get; } = new Dictionary<string, OnnxLayout>(StringComparer.Ordinal)
    {
        ["optimum"] = OnnxLayout.Optimum,
        ["diffusers"] = OnnxLayout.Diffusers,
    };

    /// <summary>The attention forms by name: <c>standard</c> operators or ONNX Runtime's <c>fused</c> kernel.</summary>
    public static IReadOnlyDictionary<string, AttentionForm> AttentionNames { get; } = new Dictionary<string, AttentionForm>(StringComparer.Ordinal)
    {
        ["standard"] = AttentionForm.Standard,
        ["fused"] = AttentionForm.OnnxRuntimeFused,
    };

    /// <summary>The layout named <paramref name="name"/> (null: optimum's); refused naming <paramref name="field"/>.</summary>
    public static OnnxLayout ParseLayout(string? name, string field) => Parse(LayoutNames, name, field, OnnxLayout.Optimum);

    /// <summary>The attention form named <paramref name="name"/> (null: standard); refused naming <paramref name="field"/>.</summary>
    public static AttentionForm ParseAttention(string? name, string field) => Parse(AttentionNames, name, field, AttentionForm.Standard);

    private static T Parse<T>(IReadOnlyDictionary<string, T> names, string? name, string field, T fallback) =>
        name is null ? fallback
            : names.TryGetValue(name, out var value) ? value
            : throw new UserInputException(field, $"'{name}' is not one of {string.Join(", ", names.Keys)}", "choose one of them");
}
