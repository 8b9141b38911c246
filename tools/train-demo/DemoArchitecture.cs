using System.Text.Json.Nodes;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Unet;
using SdAppliance.Models.Vae;
using SdAppliance.Torch.Nn;
using SdAppliance.Torch.Serialization;

namespace SdAppliance.Tools.TrainDemo;

/// <summary>
/// The demo model's shapes: Stable Diffusion's architecture (AutoencoderKL with 4 levels = 8× factor and
/// 4 latent channels, UNet2DConditionModel with cross-attention, CLIP text transformer) shrunk until it
/// trains in minutes on a CPU: 64×64 images, 8×8×4 latents.
/// </summary>
public static class DemoArchitecture
{
    public static AutoencoderKLConfig Vae { get; } = new()
    {
        DownBlockTypes = ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        UpBlockTypes = ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
        BlockOutChannels = [16, 32, 64, 64],
        LayersPerBlock = 1,
        LatentChannels = 4,
        // Groups of 8 channels at the 16-channel level (SD: 4 of 128). With 8 groups of 2 the output's
        // last GroupNorm leaves a flat background little more than a sign per group, and colours came
        // out wrong: 600 steps gave colours right in 26 of 120 reconstructions with 8 groups, 72 with 2.
        NormNumGroups = 2,
        SampleSize = [64],
    };

    public const int TextHidden = 64;

    public static ClipTextConfig TextEncoder(int vocabSize) => new()
    {
        VocabSize = vocabSize,
        HiddenSize = TextHidden,
        IntermediateSize = 4 * TextHidden,
        ProjectionDim = TextHidden,
        NumHiddenLayers = 3,
        NumAttentionHeads = 4,
        MaxPositionEmbeddings = 77,
        HiddenAct = "quick_gelu",
        // The vocabulary ends with <|startoftext|>, <|endoftext|>; pad is <|endoftext|> as in SD 1.x.
        BosTokenId = vocabSize - 2,
        EosTokenId = vocabSize - 1,
        PadTokenId = vocabSize - 1,
    };

    public static UNet2DConditionConfig Unet { get; } = new()
    {
        SampleSize = [8],
        DownBlockTypes = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        UpBlockTypes = ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        BlockOutChannels = [64, 64],
        LayersPerBlock = [1],
        CrossAttentionDim = [TextHidden],
        // diffusers' naming quirk kept from SD 1.5: attention_head_dim is the number of heads.
        AttentionHeadDim = [4],
        NormNumGroups = 8,
    };

    public static void WriteComponent(string folder, string component, string configJson, string? className, Module module, string weightsFile)
    {
        var dir = Path.Combine(folder, component);
        Directory.CreateDirectory(dir);
        var config = JsonNode.Parse(configJson)!.AsObject();
        if (className is not null)
        {
            var ordered = new JsonObject { ["_class_name"] = className, ["_diffusers_version"] = "0.30.0" };
            foreach (var (key, value) in config) ordered[key] = value?.DeepClone();
            config = ordered;
        }
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString(DiffusersConfig.JsonOptions));
        using var state = module.StateDict();
        TensorFiles.Save(Path.Combine(dir, weightsFile), state);
    }

    /// <summary>The SD 1.5 scheduler (PNDM, scaled-linear betas, epsilon) and model_index.json.</summary>
    public static void WriteSchedulerAndIndex(string folder)
    {
        Directory.CreateDirectory(Path.Combine(folder, "scheduler"));
        File.WriteAllText(Path.Combine(folder, "scheduler", "scheduler_config.json"), """
            {
              "_class_name": "PNDMScheduler",
              "_diffusers_version": "0.6.0",
              "beta_end": 0.012,
              "beta_schedule": "scaled_linear",
              "beta_start": 0.00085,
              "clip_sample": false,
              "num_train_timesteps": 1000,
              "prediction_type": "epsilon",
              "set_alpha_to_one": false,
              "skip_prk_steps": true,
              "steps_offset": 1,
              "timestep_spacing": "leading",
              "trained_betas": null
            }
            """);
        File.WriteAllText(Path.Combine(folder, "model_index.json"), """
            {
              "_class_name": "StableDiffusionPipeline",
              "_diffusers_version": "0.30.0",
              "feature_extractor": [null, null],
              "requires_safety_checker": false,
              "safety_checker": [null, null],
              "scheduler": ["diffusers", "PNDMScheduler"],
              "text_encoder": ["transformers", "CLIPTextModel"],
              "tokenizer": ["transformers", "CLIPTokenizer"],
              "unet": ["diffusers", "UNet2DConditionModel"],
              "vae": ["diffusers", "AutoencoderKL"]
            }
            """);
    }
}
