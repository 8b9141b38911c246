using SdAppliance.Models.Adapters;
using SdAppliance.Models.Loading;

namespace SdAppliance.Onnx.Export;

/// <summary>A LoRA merged into the export at its strengths.</summary>
public sealed record OnnxExportLora(string Path, double TextEncoderWeight, double UnetWeight);

/// <summary>What an export wrote.</summary>
public sealed record OnnxExportResult(string Folder, IReadOnlyList<string> Files, long Bytes, IReadOnlyList<string> Warnings);

/// <summary>
/// A whole pipeline to the folder layout ONNX Stable Diffusion apps load: <c>model_index.json</c>,
/// <c>text_encoder/</c> (SDXL: <c>text_encoder_2/</c>), <c>unet/</c>, <c>vae_encoder/</c>, <c>vae_decoder/</c>,
/// <c>tokenizer/</c>, <c>scheduler/</c>; LoRAs merged, textual-inversion tokens baked in.
/// </summary>
public static class OnnxPipelineExporter
{
    public static OnnxExportResult Export(StableDiffusionModel model, string outputFolder, OnnxExportOptions options,
        IReadOnlyList<OnnxExportLora>? loras = null, IReadOnlyList<string>? embeddingFiles = null,
        IProgress<string>? progress = null, CancellationToken cancellationToken = default) => throw new NotImplementedException("being written");
}
