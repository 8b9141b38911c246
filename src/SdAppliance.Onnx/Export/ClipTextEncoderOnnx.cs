using Onnx;
using SdAppliance.Models.TextEncoders;

namespace SdAppliance.Onnx.Export;

/// <summary>A CLIP text encoder (SD 1.x/2.x <c>text_encoder</c>, SDXL's two) as an ONNX graph.</summary>
public static class ClipTextEncoderOnnx
{
    public static ModelProto Build(ClipTextModel model, OnnxExportOptions options) => throw new NotImplementedException("being written");
}
