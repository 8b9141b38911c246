using System.Text.Json.Nodes;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Tokenization;
using SdAppliance.Models.Unet;
using SdAppliance.Models.Vae;
using SdAppliance.Torch;

namespace SdAppliance.Models.Loading;

/// <summary>
/// A loaded Stable Diffusion model: tokenizer(s), text encoder(s), UNet, VAE and the scheduler
/// settings it was trained with, on one device in one dtype. Disposing frees every weight.
/// </summary>
public sealed class StableDiffusionModel : IDiffusionModel
{
    internal StableDiffusionModel(string sourcePath, ModelFamily family, ClipTokenizer tokenizer, ClipTextModel textEncoder,
        ClipTokenizer? tokenizer2, ClipTextModel? textEncoder2, UNet2DConditionModel unet, AutoencoderKL vae, JsonObject schedulerConfig,
        Device device, DType dtype)
    {
        SourcePath = sourcePath;
        Family = family;
        Tokenizer = tokenizer;
        TextEncoder = textEncoder;
        Tokenizer2 = tokenizer2;
        TextEncoder2 = textEncoder2;
        Unet = unet;
        Vae = vae;
        SchedulerConfig = schedulerConfig;
        Device = device;
        DType = dtype;
        PromptEncoder = family == ModelFamily.XlRefiner ? new SdxlRefinerPromptEncoder(textEncoder)
            : textEncoder2 is null ? new ClipPromptEncoder(textEncoder) : new SdxlPromptEncoder(textEncoder, textEncoder2);
        TextEncoders = family == ModelFamily.XlRefiner ? [(ModelComponents.TextEncoder2, textEncoder)]
            : textEncoder2 is null ? [(ModelComponents.TextEncoder, textEncoder)] : [(ModelComponents.TextEncoder, textEncoder), (ModelComponents.TextEncoder2, textEncoder2)];
    }

    /// <summary>The diffusers folder or single file the model was read from.</summary>
    public string SourcePath { get; }

    /// <summary>The name A1111 shows: the file or folder name without extension.</summary>
    public string Name => Path.GetFileNameWithoutExtension(Path.TrimEndingDirectorySeparator(SourcePath));

    /// <summary>The VAE given in place of the model's own (<see cref="ModelLoadOptions.Vae"/>), as a full path; null when the model's own is used.</summary>
    public string? VaePath { get; internal init; }

    /// <summary>The VAE file's short hash, computed once (a VAE file is a few hundred MB) when the PNG info first asks.</summary>
    public string? VaeHash => VaePath is { } path && File.Exists(path) ? vaeHash ??= SdAppliance.Formats.Hashing.FileHashes.Uncached.ModelShortHash(path) : null;

    private string? vaeHash;

    public ModelFamily Family { get; }
    public bool IsSdxl => TextEncoder2 is not null || Family == ModelFamily.XlRefiner;

    /// <summary>The (first) tokenizer; the SDXL refiner's only one, its <c>tokenizer_2</c>.</summary>
    public ClipTokenizer Tokenizer { get; }

    /// <summary>The (first) text encoder; the SDXL refiner's only one, its <c>text_encoder_2</c> (OpenCLIP bigG with projection).</summary>
    public ClipTextModel TextEncoder { get; }

    /// <summary>The text encoders under their diffusers component names (<see cref="ModelComponents"/>), as they are written and read.</summary>
    public IReadOnlyList<(string Component, ClipTextModel Encoder)> TextEncoders { get; }

    public ClipTokenizer? Tokenizer2 { get; }
    public ClipTextModel? TextEncoder2 { get; }
    public UNet2DConditionModel Unet { get; }
    public AutoencoderKL Vae { get; }
    public PromptEncoder PromptEncoder { get; }
    public Device Device { get; }
    public DType DType { get; }

    /// <summary>The model's <c>scheduler_config.json</c> (prediction type resolved); samplers are built from it.</summary>
    public JsonObject SchedulerConfig { get; }

    public string PredictionType => SchedulerConfig["prediction_type"]?.GetValue<string>() ?? "epsilon";

    public string Backend => "libtorch";
    public long LatentChannels => Unet.Config.InChannels;
    public double VaeScalingFactor => Vae.Config.ScalingFactor;

    public int? TimeCondProjDim => Unet.Config.TimeCondProjDim;

    public Tensor PredictNoise(Tensor sample, double timestep, Tensor encoderHiddenStates, UNetAddedConditions? addedConditions, Tensor? timestepCond = null) =>
        Unet.Forward(sample, timestep, encoderHiddenStates, addedConditions, timestepCond);

    public Tensor DecodeLatents(Tensor latents) => Vae.Decode(latents);

    public DiagonalGaussianDistribution EncodeImages(Tensor pixels) => Vae.Encode(pixels);

    /// <summary>VAE downscaling: 2^(levels-1), 8 for every Stable Diffusion.</summary>
    public int VaeScaleFactor => 1 << (Vae.Config.BlockOutChannels.Count - 1);

    /// <summary>The resolution the UNet was trained at (512 for SD 1.x, 768 for SD 2.x-v, 1024 for SDXL).</summary>
    public int DefaultResolution => (Unet.Config.SampleSize is { Count: > 0 } s ? s[0] : 64) * VaeScaleFactor;

    /// <summary>
    /// What running the UNet on <paramref name="batch"/> latents of a <paramref name="height"/> × <paramref name="width"/> image
    /// asks of the CPU (its first block's channels over the latent: the widest activation), for the engine's thread policy.
    /// </summary>
    public ThreadDemand UnetThreadDemand(long batch, int height, int width, int concurrentJobs = 1) =>
        ThreadDemand.ForActivation(batch, Unet.Config.BlockOutChannels[0], height / VaeScaleFactor, width / VaeScaleFactor, concurrentJobs);

    public void Dispose()
    {
        TextEncoder.Dispose();
        TextEncoder2?.Dispose();
        Unet.Dispose();
        Vae.Dispose();
    }
}
