using SdAppliance.Diffusion.Images;
using SdAppliance.Imaging;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;

namespace SdAppliance.Diffusion.Pipelines;

/// <summary>
/// What a generation looks like part way, from its latents, cheaply enough to show while it runs: a small latent (up to
/// <see cref="VaeDecodeMaxLatentPixels"/>, such as the demo model's 8x8) through the model's own VAE, which costs next to
/// nothing at that size and is right for any model; a larger 4-channel latent through A1111's "Approx cheap" linear map
/// (a 4x3 matrix per pixel, an image at the latent's size, 1/8 of the picture's), which costs far less than a step.
/// Only the first image of a batch is previewed.
/// </summary>
public static class LatentPreview
{
    /// <summary>Latents up to this many pixels (32x32: a 256x256 picture) are previewed through the VAE.</summary>
    public const int VaeDecodeMaxLatentPixels = 32 * 32;

    // A1111's sd_vae_approx.cheap_approximation: latent channel (row) to RGB in [-1, 1] (column).
    private static readonly float[] Sd1Coefficients =
    [
        0.298f, 0.207f, 0.208f,
        0.187f, 0.286f, 0.173f,
        -0.158f, 0.189f, 0.264f,
        -0.184f, -0.271f, -0.473f,
    ];

    private static readonly float[] SdxlCoefficients =
    [
        0.3448f, 0.4168f, 0.4395f,
        -0.1953f, -0.0290f, 0.0250f,
        0.1074f, 0.0886f, -0.0163f,
        -0.3730f, -0.2499f, -0.2088f,
    ];

    /// <summary>The preview of the first latent of <paramref name="latents"/> ([B, C, h, w], as the sampler holds them).</summary>
    public static RgbImage Render(IDiffusionModel model, Tensor latents)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(latents);
        using var scope = torch.NewDisposeScope();
        using var inference = Autograd.InferenceMode();
        var first = latents.Narrow(0, 0, 1);
        if (first.Size(2) * first.Size(3) <= VaeDecodeMaxLatentPixels || first.Size(1) != 4)
            return ImageTensors.ToImages(model.DecodeLatents(first.Div(model.VaeScalingFactor)))[0];
        return Approximate(first, model.IsSdxl);
    }

    /// <summary>A1111's "Approx cheap": each latent pixel's 4 channels times a fixed 4x3 matrix, an image at the latent's size.</summary>
    public static RgbImage Approximate(Tensor latents, bool sdxl)
    {
        ArgumentNullException.ThrowIfNull(latents);
        if (latents.Dim != 4 || latents.Size(1) != 4)
            throw new ArgumentException($"expected latents of shape [B, 4, h, w], got [{string.Join(", ", latents.Shape)}]", nameof(latents));
        using var scope = torch.NewDisposeScope();
        var coefficients = torch.Tensor(sdxl ? SdxlCoefficients : Sd1Coefficients, 4, 3);
        var rgb = latents.Narrow(0, 0, 1).To(Device.Cpu, DType.Float32).Permute(0, 2, 3, 1).Matmul(coefficients).Permute(0, 3, 1, 2);
        return ImageTensors.ToImages(rgb)[0];
    }
}
