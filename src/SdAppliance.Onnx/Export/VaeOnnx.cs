using Onnx;
using SdAppliance.Models.Vae;

namespace SdAppliance.Onnx.Export;

/// <summary>The VAE's two halves as ONNX graphs: <c>vae_encoder</c> (images → posterior) and <c>vae_decoder</c> (latent_sample → sample).</summary>
public static class VaeOnnx
{
    public static ModelProto BuildEncoder(AutoencoderKL vae, OnnxExportOptions options) => throw new NotImplementedException("being written");

    public static ModelProto BuildDecoder(AutoencoderKL vae, OnnxExportOptions options) => throw new NotImplementedException("being written");
}
