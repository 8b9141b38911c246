using SdAppliance.Models.Unet;
using SdAppliance.Torch;

namespace SdAppliance.Models.Loading;

/// <summary>
/// Tells a v-prediction SD 2.x UNet from an epsilon one, whose weights have the same names and
/// shapes, the way A1111 does when a checkpoint comes without its .yaml: at t = 999 on a flat
/// grey latent with flat conditioning, a v-model's output lies far below its input
/// (mean(out - x) &lt; -1) while an epsilon model's does not.
/// </summary>
public static class VParameterization
{
    public static string Detect(UNet2DConditionModel unet)
    {
        using var inference = Autograd.InferenceMode();
        using var scope = torch.NewDisposeScope();
        var device = unet.Parameters().First().Device;
        var dtype = unet.Parameters().First().DType;
        var crossAttentionDim = unet.Config.CrossAttentionDim[0];
        var x = torch.Full([1, unet.Config.InChannels, 8, 8], 0.5, dtype, device);
        var context = torch.Full([1, 2, crossAttentionDim], 0.5, dtype, device);
        var output = unet.Forward(x, 999, context);
        return (output - x).To(DType.Float32).Mean().Item() < -1 ? "v_prediction" : "epsilon";
    }
}
