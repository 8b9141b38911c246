using System.Text.Json.Nodes;
using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Imaging;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.Loading;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Unet;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using SdAppliance.Torch.Serialization;

namespace SdAppliance.Diffusion.Tests;

/// <summary>
/// SDXL's paths (two text encoders and tokenizers, pooled embeddings, size/crop time ids, zeros for an
/// empty negative prompt) on a tiny SDXL-shaped model with seeded random weights, written as a
/// diffusers folder and loaded back, as a real SDXL folder would be.
/// </summary>
public sealed class SdxlPipelineTests : IDisposable
{
    private static readonly string TinySd = Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sd");
    private readonly string folder = Directory.CreateTempSubdirectory("sdapp-sdxl-").FullName;

    public void Dispose() => Directory.Delete(folder, recursive: true);

    private static JsonObject Json(string path) => JsonNode.Parse(File.ReadAllText(path))!.AsObject();

    private void Write(string component, JsonObject config, Module module, string weights)
    {
        var dir = Path.Combine(folder, component);
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        using var state = module.StateDict();
        TensorFiles.Save(Path.Combine(dir, weights), state);
    }

    private void BuildTinySdxl()
    {
        var unetConfig = Json(Path.Combine(TinySd, "unet", "config.json"));
        unetConfig["down_block_types"] = new JsonArray("DownBlock2D", "CrossAttnDownBlock2D");
        unetConfig["up_block_types"] = new JsonArray("CrossAttnUpBlock2D", "UpBlock2D");
        unetConfig["attention_head_dim"] = new JsonArray(2, 4);
        unetConfig["transformer_layers_per_block"] = new JsonArray(1, 2);
        unetConfig["use_linear_projection"] = true;
        unetConfig["cross_attention_dim"] = 64;  // 32 (CLIP-L-like) + 32 (bigG-like)
        unetConfig["addition_embed_type"] = "text_time";
        unetConfig["addition_time_embed_dim"] = 8;
        unetConfig["projection_class_embeddings_input_dim"] = 6 * 8 + 32;
        var teConfig = Json(Path.Combine(TinySd, "text_encoder", "config.json"));
        var te2Config = teConfig.DeepClone().AsObject();
        te2Config["hidden_act"] = "gelu";
        te2Config["architectures"] = new JsonArray("CLIPTextModelWithProjection");

        torch.ManualSeed(5);
        using (var unet = new UNet2DConditionModel(DiffusersConfig.Parse<UNet2DConditionConfig>(unetConfig.ToJsonString())))
            Write("unet", unetConfig, unet, "diffusion_pytorch_model.safetensors");
        using (var te = new ClipTextModel(ClipTextConfig.FromJson(teConfig.ToJsonString())))
            Write("text_encoder", teConfig, te, "model.safetensors");
        using (var te2 = new ClipTextModel(ClipTextConfig.FromJson(te2Config.ToJsonString()), withProjection: true))
            Write("text_encoder_2", te2Config, te2, "model.safetensors");
        foreach (var part in new[] { "vae", "tokenizer", "scheduler" })
            CopyFolder(Path.Combine(TinySd, part), Path.Combine(folder, part));
        CopyFolder(Path.Combine(TinySd, "tokenizer"), Path.Combine(folder, "tokenizer_2"));
    }

    [Fact]
    public void TinySdxlFolderLoadsAndGeneratesWithMicroConditioning()
    {
        BuildTinySdxl();
        using var model = ModelLoader.Load(folder);
        Assert.True(model.IsSdxl);
        Assert.Equal(ModelFamily.XlBase, model.Family);
        Assert.Equal(0, model.Tokenizer2!.PadId);  // OpenCLIP pads with "!"
        Assert.Equal(model.Tokenizer.EosId, model.Tokenizer.PadId);

        var pipeline = new StableDiffusionPipeline(model);
        var request = new GenerationRequest { Prompt = "a red circle", Seed = 1, Steps = 3, Sampler = "Euler" };
        var image = Assert.Single(pipeline.Generate(request)).Image;
        Assert.Equal((64, 64), (image.Width, image.Height));
        Assert.Equal(image.Pixels, pipeline.Generate(request)[0].Image.Pixels);
        // The size conditioning reaches the UNet: another target size is another image, not a crop of it.
        var wide = pipeline.Generate(request with { Width = 128 })[0].Image;
        Assert.Equal(128, wide.Width);
        // An empty negative prompt is zeros (diffusers' force_zeros_for_empty_prompt), a space-only one too,
        // while a real negative prompt changes the result.
        Assert.Equal(image.Pixels, pipeline.Generate(request with { NegativePrompt = " " })[0].Image.Pixels);
        Assert.NotEqual(image.Pixels, pipeline.Generate(request with { NegativePrompt = "blue" })[0].Image.Pixels);
        Assert.Contains("Size: 64x64", A1111Parameters.Parse(pipeline.Generate(request)[0].Parameters).ToString());
    }

    private static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
    }
}
