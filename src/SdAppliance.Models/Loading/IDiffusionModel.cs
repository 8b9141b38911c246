using System.Text.Json.Nodes;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Tokenization;
using SdAppliance.Models.Unet;
using SdAppliance.Models.Vae;
using SdAppliance.Torch;

namespace SdAppliance.Models.Loading;

/// <summary>
/// A Stable Diffusion model as the pipelines run it, whatever engine runs its networks: libtorch
/// (<see cref="StableDiffusionModel"/>, our modules) or ONNX Runtime (an exported folder). The
/// tokenizers, scheduler settings and prompt handling are the same for both; only the three networks
/// (text encoders behind <see cref="PromptEncoder"/>, UNet, VAE) differ. Tensors in and out are
/// libtorch tensors on <see cref="Device"/> in <see cref="DType"/>, so schedulers are not duplicated.
/// </summary>
public interface IDiffusionModel : IDisposable
{
    /// <summary>The folder or file the model was read from.</summary>
    string SourcePath { get; }

    /// <summary>The name A1111 shows.</summary>
    string Name { get; }

    /// <summary>What runs the networks: <c>libtorch</c> or <c>onnxruntime</c>.</summary>
    string Backend { get; }

    ModelFamily Family { get; }
    bool IsSdxl { get; }
    ClipTokenizer Tokenizer { get; }
    ClipTokenizer? Tokenizer2 { get; }

    /// <summary>Tokenized prompts to UNet conditioning (the text encoders, clip skip, emphasis).</summary>
    PromptEncoder PromptEncoder { get; }

    /// <summary>The model's <c>scheduler_config.json</c> (prediction type resolved).</summary>
    JsonObject SchedulerConfig { get; }

    string PredictionType => SchedulerConfig["prediction_type"]?.GetValue<string>() ?? "epsilon";

    /// <summary>Pixels per latent pixel (8 for every Stable Diffusion).</summary>
    int VaeScaleFactor { get; }

    /// <summary>The image size the UNet was trained at.</summary>
    int DefaultResolution { get; }

    /// <summary>The latent channels the UNet takes (4).</summary>
    long LatentChannels { get; }

    /// <summary>The VAE's <c>scaling_factor</c> (0.18215 for SD 1.x/2.x, 0.13025 for SDXL).</summary>
    double VaeScalingFactor { get; }

    Device Device { get; }
    DType DType { get; }

    /// <summary>
    /// The UNet's <c>time_cond_proj_dim</c>: the width of the guidance embedding a guidance-distilled UNet (LCM) takes as
    /// <c>timestep_cond</c>; null for a UNet that is guided by an unconditional batch.
    /// </summary>
    int? TimeCondProjDim { get; }

    /// <summary>
    /// The UNet's prediction for <paramref name="sample"/> [B, C, h, w] at <paramref name="timestep"/>;
    /// <paramref name="timestepCond"/> [B, <see cref="TimeCondProjDim"/>] for a UNet that takes one.
    /// </summary>
    Tensor PredictNoise(Tensor sample, double timestep, Tensor encoderHiddenStates, UNetAddedConditions? addedConditions, Tensor? timestepCond = null);

    /// <summary>Latents (already divided by the scaling factor) to images in [-1, 1], [B, 3, H, W].</summary>
    Tensor DecodeLatents(Tensor latents);

    /// <summary>Images in [-1, 1] to the VAE's posterior.</summary>
    DiagonalGaussianDistribution EncodeImages(Tensor pixels);
}
