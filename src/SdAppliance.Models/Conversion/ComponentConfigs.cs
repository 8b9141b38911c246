using System.Text.Json.Nodes;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.Loading;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Unet;

namespace SdAppliance.Models.Conversion;

/// <summary>
/// The <c>config.json</c> of each component of a loaded model, as diffusers' and transformers' <c>save_pretrained</c>
/// write them: a diffusers folder has one per component, and optimum copies the same file beside each exported ONNX model.
/// </summary>
public static class ComponentConfigs
{
    /// <summary>The configs by component (<see cref="ModelComponents"/>): unet, vae, text_encoder and SDXL's text_encoder_2.</summary>
    public static Dictionary<string, string> Of(StableDiffusionModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var configs = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [ModelComponents.Unet] = Unet(model.Unet.Config),
            [ModelComponents.Vae] = WithClass(DiffusersConfig.ToJson(model.Vae.Config), "AutoencoderKL"),
            [ModelComponents.TextEncoder] = TextEncoder(model.TextEncoder),
        };
        if (model.TextEncoder2 is not null) configs[ModelComponents.TextEncoder2] = TextEncoder(model.TextEncoder2);
        return configs;
    }

    /// <summary>diffusers' config.json of a UNet.</summary>
    public static string Unet(UNet2DConditionConfig config) => WithClass(DiffusersConfig.ToJson(config), "UNet2DConditionModel");

    /// <summary>transformers' config of a CLIP text model: its fields plus the architecture and model type it loads as.</summary>
    public static string TextEncoder(ClipTextModel encoder)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        var config = JsonNode.Parse(encoder.Config.ToJson())!.AsObject();
        config["architectures"] = new JsonArray(encoder.WithProjection ? "CLIPTextModelWithProjection" : "CLIPTextModel");
        config["model_type"] = "clip_text_model";
        return config.ToJsonString(DiffusersConfig.JsonOptions);
    }

    // diffusers' configs name their class and the release that wrote them first.
    private static string WithClass(string json, string className)
    {
        var config = JsonNode.Parse(json)!.AsObject();
        var result = new JsonObject { ["_class_name"] = className, ["_diffusers_version"] = ModelWriter.DiffusersVersion };
        foreach (var (key, value) in config) result[key] = value?.DeepClone();
        return result.ToJsonString(DiffusersConfig.JsonOptions);
    }
}
