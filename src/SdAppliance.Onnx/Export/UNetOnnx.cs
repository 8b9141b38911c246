using Onnx;
using SdAppliance.Models.Unet;

namespace SdAppliance.Onnx.Export;

/// <summary>The UNet (SD 1.x/2.x, SDXL with text_embeds/time_ids) as an ONNX graph: sample, timestep, encoder_hidden_states → out_sample.</summary>
public static class UNetOnnx
{
    public static ModelProto Build(UNet2DConditionModel unet, OnnxExportOptions options) => throw new NotImplementedException("being written");
}
