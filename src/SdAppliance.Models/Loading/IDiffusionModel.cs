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

    /// <summary>SDXL's conditioning (pooled text embeddings and time ids), the base's or the refiner's.</summary>
    bool IsSdxl { get; }

    /// <summary>
    /// diffusers' <c>requires_aesthetics_score</c>: the time ids are original size, crop and an aesthetic score (5 values,
    /// the SDXL refiner) instead of original size, crop and target size (6, the base).
    /// </summary>
    bool RequiresAestheticsScore => Family == ModelFamily.XlRefiner;

    /// <summary>diffusers' <c>force_zeros_for_empty_prompt</c>: the SDXL base's model_index says true, the refiner's false.</summary>
    bool ForceZerosForEmptyPrompt => IsSdxl && !RequiresAestheticsScore;
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

    /// <summary>The VAE used in place of the model's own (A1111's <c>sd_vae</c>), as a full path; null when the model's own is.</summary>
    string? VaePath => null;

    /// <summary>A1111's <c>VAE hash</c> of <see cref="VaePath"/>: the first 10 hex digits of the file's SHA-256; null for the model's own VAE or a VAE folder.</summary>
    string? VaeHash => null;

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
