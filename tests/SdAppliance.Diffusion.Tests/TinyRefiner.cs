using System.Text.Json.Nodes;
using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.Conversion;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Unet;
using SdAppliance.Models.Vae;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using SdAppliance.Torch.Serialization;

namespace SdAppliance.Diffusion.Tests;

/// <summary>
/// A tiny SDXL refiner for tiny-sdxl: text_encoder_2 alone (tiny-sdxl's), a UNet whose cross attention is that encoder's width
/// and whose added embedding takes 5 time ids, tiny-sdxl's VAE config, seeded random weights, written by our writer.
/// </summary>
internal static class TinyRefiner
{
    private static readonly string TinySdxl = Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sdxl");

    private static JsonObject Json(string path) => JsonNode.Parse(File.ReadAllText(path))!.AsObject();

    /// <summary>tiny-sdxl's UNet config made the refiner's: context bigG's hidden size (64), 5 time ids of 16 + pooled 48.</summary>
    private static JsonObject RefinerUnetConfig(int timeIds = 5)
    {
        var unet = Json(Path.Combine(TinySdxl, "unet", "config.json"));
        var te2 = Json(Path.Combine(TinySdxl, "text_encoder_2", "config.json"));
        unet["cross_attention_dim"] = te2["hidden_size"]!.GetValue<int>();
        unet["projection_class_embeddings_input_dim"] = timeIds * unet["addition_time_embed_dim"]!.GetValue<int>() + te2["projection_dim"]!.GetValue<int>();
        return unet;
    }

    private static List<ModelTensor> Tensors(string component, StateDict state) =>
        [.. state.Select(kv => new ModelTensor(new TensorKey(component, kv.Key), TensorFiles.ToSafetensors(kv.Value.DType, kv.Key), kv.Value.Shape, kv.Value.ToBytes))];

    /// <summary>Writes the tiny refiner both ways, from the same random modules: a diffusers folder and a single file.</summary>
    public static void Write(string folder, string singleFile, int timeIds = 5)
    {
        var unetConfig = RefinerUnetConfig(timeIds);
        var vaeConfig = File.ReadAllText(Path.Combine(TinySdxl, "vae", "config.json"));
        var te2Config = File.ReadAllText(Path.Combine(TinySdxl, "text_encoder_2", "config.json"));
        torch.ManualSeed(14);
        using var unet = new UNet2DConditionModel(DiffusersConfig.Parse<UNet2DConditionConfig>(unetConfig.ToJsonString()));
        using var vae = new AutoencoderKL(DiffusersConfig.Parse<AutoencoderKLConfig>(vaeConfig));
        using var te2 = new ClipTextModel(ClipTextConfig.FromJson(te2Config), withProjection: true);
        using var unetState = unet.StateDict();
        using var vaeState = vae.StateDict();
        using var te2State = te2.StateDict();
        List<ModelTensor> tensors = [.. Tensors(ModelComponents.Unet, unetState), .. Tensors(ModelComponents.Vae, vaeState), .. Tensors(ModelComponents.TextEncoder2, te2State)];
        var configs = new Dictionary<string, string>
        {
            [ModelComponents.Unet] = unetConfig.ToJsonString(),
            [ModelComponents.Vae] = vaeConfig,
            [ModelComponents.TextEncoder2] = te2Config,
        };
        ModelWriter.WriteDiffusersFolder(folder, new DiffusersFolderContent(tensors, configs, Json(Path.Combine(TinySdxl, "scheduler", "scheduler_config.json")),
            new Dictionary<string, string> { ["tokenizer_2"] = Path.Combine(TinySdxl, "tokenizer_2") }, ModelFamily.XlRefiner));
        var mapping = LdmKeyMap.FromDiffusers(tensors.ToDictionary(t => t.Key, t => t.Shape.ToArray()));
        if (mapping.Family != ModelFamily.XlRefiner || mapping.Unmapped.Count > 0)
            throw new InvalidOperationException($"the refiner's single-file mapping: {mapping.Family}, unmapped {string.Join(", ", mapping.Unmapped)}");
        ModelWriter.WriteSingleFile(singleFile, ModelFormat.Safetensors, ModelWriter.Remap(mapping, tensors));
    }
}
