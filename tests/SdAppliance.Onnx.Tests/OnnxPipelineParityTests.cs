using System.Text.Json.Nodes;
using SdAppliance.Diffusion.Pipelines;
using System.Runtime.InteropServices;
using SdAppliance.Formats.Adapters;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Formats;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Unet;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using SdAppliance.Torch.Serialization;
using SdAppliance.Imaging;
using SdAppliance.Models.Loading;
using SdAppliance.Onnx.Export;
using SdAppliance.Onnx.Runtime;

namespace SdAppliance.Onnx.Tests;

/// <summary>
/// The acceptance of the ONNX Runtime backend: the tiny fixture model, exported by <see cref="OnnxPipelineExporter"/>,
/// run by ONNX Runtime CPU through the same <see cref="StableDiffusionPipeline"/> as its libtorch modules, draws the same
/// picture from the same prompt, seed and sampler, within one 8-bit level (the networks agree within 1e-4; rounding to
/// uint8 can still land a value on the other side of a level).
/// </summary>
public sealed class OnnxPipelineParityTests : IDisposable
{
    private static readonly string TinySd = ToyOnnxExport.TinySd;
    private readonly string root = Directory.CreateTempSubdirectory("sdapp-onnx-parity-").FullName;

    public void Dispose() => Directory.Delete(root, recursive: true);

    private string Export(StableDiffusionModel model, OnnxExportOptions options, string name) =>
        OnnxPipelineExporter.Export(model, Path.Combine(root, name), options).Folder;

    private static RgbImage Draw(IDiffusionModel model, GenerationRequest request) => new StableDiffusionPipeline(model).Generate(request)[0].Image;

    private static void AssertWithinOneLevel(RgbImage expected, RgbImage actual, string what)
    {
        Assert.Equal((expected.Width, expected.Height), (actual.Width, actual.Height));
        var maxDiff = expected.Pixels.Zip(actual.Pixels, (a, b) => Math.Abs(a - b)).Max();
        Assert.True(maxDiff <= 1, $"{what}: max pixel difference {maxDiff}");
    }

    private static readonly GenerationRequest P1 = new()
    {
        Prompt = "a photo of a (red:1.2) circle on a blue background", NegativePrompt = "green", Seed = 42, Steps = 10, Sampler = "PNDMScheduler", CfgScale = 7.5,
    };

    [Fact]
    public void TheExportedFixtureDrawsWhatLibtorchDraws()
    {
        using var torchModel = ModelLoader.Load(TinySd);
        var folder = Export(torchModel, new OnnxExportOptions(), "optimum");
        using var onnx = OnnxDiffusionModel.Load(folder);
        Assert.Equal((torchModel.VaeScaleFactor, torchModel.DefaultResolution, torchModel.VaeScalingFactor, torchModel.LatentChannels),
            (onnx.VaeScaleFactor, onnx.DefaultResolution, onnx.VaeScalingFactor, onnx.LatentChannels));
        Assert.Equal(torchModel.Family, onnx.Family);

        AssertWithinOneLevel(Draw(torchModel, P1), Draw(onnx, P1), "txt2img, PNDM");
        // A multistep solver with a Karras schedule (fractional timesteps, a float timestep input) and clip skip 2:
        // final_layer_norm of the penultimate hidden state, its weights read from the exported graph.
        var karras = P1 with { Sampler = "DPM++ 2M Karras", Steps = 8, ClipSkip = 2, Seed = 7 };
        AssertWithinOneLevel(Draw(torchModel, karras), Draw(onnx, karras), "txt2img, DPM++ 2M Karras, clip skip 2");
        // img2img through optimum's latent_parameters: the posterior sampled with the seed's noise, as libtorch samples it.
        var init = Draw(torchModel, P1 with { Seed = 3 });
        var img2img = P1 with { InitImage = init, Strength = 0.6, Sampler = "Euler a", Seed = 9 };
        AssertWithinOneLevel(Draw(torchModel, img2img), Draw(onnx, img2img), "img2img, Euler a");
    }

    [Fact]
    public void DiffusersLayoutDrawsTheSameTxt2img()
    {
        using var torchModel = ModelLoader.Load(TinySd);
        var folder = Export(torchModel, new OnnxExportOptions { Layout = OnnxLayout.Diffusers }, "diffusers");
        using var onnx = OnnxDiffusionModel.Load(folder);
        Assert.True(onnx.EncoderSamplesInGraph);
        var request = P1 with { Sampler = "Euler", BatchSize = 2 };
        AssertWithinOneLevel(Draw(torchModel, request), Draw(onnx, request), "txt2img, diffusers layout");
    }

    [Fact]
    public void AnFp16ExportTakesAndGivesFloat16AtItsBoundaryAndDrawsNearlyTheSame()
    {
        using var torchModel = ModelLoader.Load(TinySd);
        var folder = Export(torchModel, new OnnxExportOptions { Precision = OnnxPrecision.Float16 }, "fp16");
        using var onnx = OnnxDiffusionModel.Load(folder);
        var expected = Draw(torchModel, P1);
        var actual = Draw(onnx, P1);
        // Each fp16 network's output is within about √nodes · 2^-10 of its scale (ExportRuns.Float16Tolerance): a few
        // thousandths of the [-1, 1] image after the VAE, under one 8-bit level (2/255 there), plus the rounding to uint8.
        var maxDiff = expected.Pixels.Zip(actual.Pixels, (a, b) => Math.Abs(a - b)).Max();
        Assert.True(maxDiff <= 2, $"fp16 export: max pixel difference {maxDiff}");
        Assert.Equal(64, Draw(onnx, P1 with { InitImage = expected, Strength = 0.5 }).Width);
    }

    /// <summary>A small SDXL-shaped diffusers folder with random weights (two text encoders, text_time conditioning).</summary>
    private string TinySdxl()
    {
        var folder = Path.Combine(root, "tiny-sdxl");
        static JsonObject Json(string path) => JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        void Write(string component, JsonObject config, Module module, string weights)
        {
            Directory.CreateDirectory(Path.Combine(folder, component));
            File.WriteAllText(Path.Combine(folder, component, "config.json"), config.ToJsonString());
            using var state = module.StateDict();
            TensorFiles.Save(Path.Combine(folder, component, weights), state);
        }
        var unet = Json(Path.Combine(TinySd, "unet", "config.json"));
        unet["down_block_types"] = new JsonArray("DownBlock2D", "CrossAttnDownBlock2D");
        unet["up_block_types"] = new JsonArray("CrossAttnUpBlock2D", "UpBlock2D");
        unet["attention_head_dim"] = new JsonArray(2, 4);
        unet["use_linear_projection"] = true;
        unet["cross_attention_dim"] = 64;  // the two encoders' 32 + 32
        unet["addition_embed_type"] = "text_time";
        unet["addition_time_embed_dim"] = 8;
        unet["projection_class_embeddings_input_dim"] = 6 * 8 + 32;
        var te = Json(Path.Combine(TinySd, "text_encoder", "config.json"));
        var te2 = te.DeepClone().AsObject();
        te2["hidden_act"] = "gelu";
        torch.ManualSeed(11);
        using (var u = new UNet2DConditionModel(DiffusersConfig.Parse<UNet2DConditionConfig>(unet.ToJsonString()))) Write("unet", unet, u, "diffusion_pytorch_model.safetensors");
        using (var t = new ClipTextModel(ClipTextConfig.FromJson(te.ToJsonString()))) Write("text_encoder", te, t, "model.safetensors");
        using (var t = new ClipTextModel(ClipTextConfig.FromJson(te2.ToJsonString()), withProjection: true)) Write("text_encoder_2", te2, t, "model.safetensors");
        foreach (var (from, to) in new[] { ("vae", "vae"), ("tokenizer", "tokenizer"), ("tokenizer", "tokenizer_2"), ("scheduler", "scheduler") })
        {
            Directory.CreateDirectory(Path.Combine(folder, to));
            foreach (var file in Directory.EnumerateFiles(Path.Combine(TinySd, from))) File.Copy(file, Path.Combine(folder, to, Path.GetFileName(file)));
        }
        return folder;
    }

    [Fact]
    public void AnSdxlExportDrawsWhatLibtorchDraws()
    {
        var source = TinySdxl();
        using var torchModel = ModelLoader.Load(source);
        using var onnx = OnnxDiffusionModel.Load(Export(torchModel, new OnnxExportOptions(), "sdxl-onnx"));
        Assert.True(onnx.IsSdxl);
        Assert.Equal(ModelFamily.XlBase, onnx.Family);
        Assert.Equal(torchModel.Tokenizer2!.PadId, onnx.Tokenizer2!.PadId);
        // Both encoders' penultimate layers, the pooled text_embeds and the size ids: an empty negative prompt (zeros) and
        // a real one, at clip skip 1 and 2, and at a size that is not the native one.
        var request = new GenerationRequest { Prompt = "a (red:1.1) circle", Seed = 1, Steps = 4, Sampler = "Euler", CfgScale = 6 };
        AssertWithinOneLevel(Draw(torchModel, request), Draw(onnx, request), "SDXL txt2img");
        var other = request with { NegativePrompt = "blue", ClipSkip = 2, Width = 96 };
        AssertWithinOneLevel(Draw(torchModel, other), Draw(onnx, other), "SDXL, negative prompt, clip skip 2, 96 wide");
    }

    /// <summary>
    /// A rank-2 kohya LoRA on one UNet and one text encoder layer of the tiny model, strong enough to change the picture,
    /// and a two-vector textual-inversion embedding.
    /// </summary>
    private (string Lora, string Embedding) Adapters(StableDiffusionModel model)
    {
        var folder = Directory.CreateDirectory(Path.Combine(root, "adapters")).FullName;
        var random = new Random(3);
        byte[] Floats(long count, double scale) =>
            MemoryMarshal.AsBytes(Enumerable.Range(0, (int)count).Select(_ => (float)((random.NextDouble() - 0.5) * scale)).ToArray().AsSpan()).ToArray();
        using var unet = model.Unet.StateDict();
        using var te = model.TextEncoder.StateDict();
        var tensors = new List<SafetensorsTensor>();
        void Module(string name, long[] shape)
        {
            long[] down = [2, shape[1], .. shape.Skip(2)];
            long[] up = [shape[0], 2, .. shape.Skip(2).Select(_ => 1L)];
            tensors.Add(new SafetensorsTensor(name + ".lora_down.weight", SafetensorsDType.F32, down, Floats(down.Aggregate(1L, (a, b) => a * b), 2)));
            tensors.Add(new SafetensorsTensor(name + ".lora_up.weight", SafetensorsDType.F32, up, Floats(up.Aggregate(1L, (a, b) => a * b), 2)));
            tensors.Add(new SafetensorsTensor(name + ".alpha", SafetensorsDType.F32, [], BitConverter.GetBytes(2f)));
        }
        Module("lora_unet_down_blocks_0_attentions_0_proj_in", unet["down_blocks.0.attentions.0.proj_in.weight"].Shape);
        Module("lora_te_text_model_encoder_layers_0_mlp_fc1", te["text_model.encoder.layers.0.mlp.fc1.weight"].Shape);
        var lora = Path.Combine(folder, "style.safetensors");
        SafetensorsFile.Write(lora, tensors);
        var width = model.TextEncoder.Config.HiddenSize;
        var embedding = Path.Combine(folder, "zwx.safetensors");
        TextualInversionFile.WriteSafetensors(embedding, Floats(2 * width, 1), [2, width]);
        return (lora, embedding);
    }

    [Fact]
    public void LorasMergedAndEmbeddingsBakedAtExportDrawWhatLibtorchAppliesAtRunTime()
    {
        using var torchModel = ModelLoader.Load(TinySd);
        var (lora, embedding) = Adapters(torchModel);
        var folder = Path.Combine(root, "baked");
        OnnxPipelineExporter.Export(torchModel, folder, new OnnxExportOptions(), [new OnnxExportLora(lora, 0.7, 0.7)], [embedding]);
        using var onnx = OnnxDiffusionModel.Load(folder);
        var adapters = Path.GetDirectoryName(lora)!;
        var request = P1 with { Prompt = "a photo of a zwx circle on a blue background" };
        var expected = new StableDiffusionPipeline(torchModel, new AdapterFolders([adapters], [adapters]))
            .Generate(request with { Prompt = request.Prompt + " <lora:style:0.7>" })[0].Image;
        var actual = new StableDiffusionPipeline(onnx, new AdapterFolders([adapters], [adapters])).Generate(request);
        Assert.Empty(actual.Warnings);  // the baked token is the export's own: nothing was left out
        AssertWithinOneLevel(expected, actual[0].Image, "LoRA at 0.7 and a baked embedding");
        // The adapters matter: without them libtorch draws something else.
        Assert.NotEqual(expected.Pixels, Draw(torchModel, P1 with { Prompt = "a photo of a zwx circle on a blue background" }).Pixels);
    }
}
