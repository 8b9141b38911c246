using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using Onnx;
using SdAppliance.Formats;
using SdAppliance.Formats.Adapters;
using SdAppliance.Models.Adapters;
using SdAppliance.Models.Loading;
using SdAppliance.Models.Tokenization;
using SdAppliance.Onnx.Export;
using SdAppliance.Onnx.Graphs;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using DataType = Onnx.TensorProto.Types.DataType;

namespace SdAppliance.Onnx.Tests;

/// <summary>
/// The exported folder: its layout and files in both layouts, the configs, tokenizers and scheduler beside the networks,
/// LoRAs merged at their weights while the networks are built and undone after, and the folder written whole or not at all.
/// The folder tests give the exporter one small graph per network (each holding the weight the LoRA tests read, taken
/// from the model when the network is built); the tests at the end run the real builders.
/// </summary>
public sealed class PipelineExportTests : IDisposable
{
    private static readonly string TinyFolder = Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sd");
    private static readonly string TinySdxlFolder = Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sdxl");

    private const string UnetProbe = "down_blocks.0.attentions.0.proj_in";
    private const string TextEncoderProbe = "text_model.encoder.layers.0.mlp.fc1";

    private readonly string temp = Directory.CreateTempSubdirectory("sdapp-onnx-export-").FullName;

    public void Dispose() => Directory.Delete(temp, recursive: true);

    [Fact]
    public void OptimumLayoutHasEveryPartWithItsConfigTokenizerSchedulerAndIndex()
    {
        using var model = ModelLoader.Load(TinyFolder);
        var target = Path.Combine(temp, "tiny-onnx");
        var reported = new List<string>();

        var result = OnnxPipelineExporter.Write(model, target, new OnnxExportOptions(), StandIns(model), [], [], new Sync<string>(reported.Add), default);

        string[] expected =
        [
            "model_index.json", "scheduler/scheduler_config.json",
            "text_encoder/config.json", "text_encoder/model.onnx",
            "tokenizer/added_tokens.json", "tokenizer/merges.txt", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json", "tokenizer/vocab.json",
            "unet/config.json", "unet/model.onnx",
            "vae_decoder/config.json", "vae_decoder/model.onnx",
            "vae_encoder/config.json", "vae_encoder/model.onnx",
        ];
        Assert.Equal(expected, result.Files);
        Assert.Equal(expected, Files(target));
        Assert.Equal(target, result.Folder);
        Assert.Equal(expected.Sum(f => new FileInfo(Path.Combine(target, f)).Length), result.Bytes);
        Assert.Equal(OnnxPipelineExporter.Parts(model), reported);
        Assert.Empty(result.Warnings);

        var index = Json(target, "model_index.json");
        Assert.Equal(
            ["_class_name", "_diffusers_version", "feature_extractor", "requires_safety_checker", "safety_checker", "scheduler", "text_encoder", "tokenizer", "unet", "vae_decoder", "vae_encoder"],
            index.Select(kv => kv.Key));
        Assert.Equal("ORTStableDiffusionPipeline", (string)index["_class_name"]!);
        foreach (var network in new[] { "text_encoder", "unet", "vae_decoder", "vae_encoder" })
            Assert.Equal("""["diffusers","OnnxRuntimeModel"]""", index[network]!.ToJsonString());
        Assert.Equal("""["transformers","CLIPTokenizer"]""", index["tokenizer"]!.ToJsonString());
        Assert.Equal("""["diffusers","PNDMScheduler"]""", index["scheduler"]!.ToJsonString());
        Assert.Equal("[null,null]", index["safety_checker"]!.ToJsonString());
        Assert.Equal("[null,null]", index["feature_extractor"]!.ToJsonString());
        Assert.False((bool)index["requires_safety_checker"]!);

        // optimum copies each submodel's config beside its model.onnx: the fixture's own fields come back.
        var unetConfig = Json(target, "unet", "config.json");
        var fixtureUnet = Json(TinyFolder, "unet", "config.json");
        Assert.Equal("UNet2DConditionModel", (string)unetConfig["_class_name"]!);
        foreach (var key in new[] { "block_out_channels", "down_block_types", "cross_attention_dim", "sample_size", "in_channels", "attention_head_dim" })
            Assert.Equal(fixtureUnet[key]!.ToJsonString(), unetConfig[key]!.ToJsonString());
        foreach (var vae in new[] { "vae_encoder", "vae_decoder" })
        {
            var config = Json(target, vae, "config.json");
            Assert.Equal("AutoencoderKL", (string)config["_class_name"]!);
            Assert.Equal((double)Json(TinyFolder, "vae", "config.json")["scaling_factor"]!, (double)config["scaling_factor"]!);
        }
        var textConfig = Json(target, "text_encoder", "config.json");
        Assert.Equal("""["CLIPTextModel"]""", textConfig["architectures"]!.ToJsonString());
        Assert.Equal("float32", (string)textConfig["torch_dtype"]!);
        Assert.Equal((int)Json(TinyFolder, "text_encoder", "config.json")["hidden_size"]!, (int)textConfig["hidden_size"]!);

        // The tokenizer is the model's: the fixture's vocabulary and merges, the same ids for a prompt.
        Assert.True(JsonNode.DeepEquals(Json(TinyFolder, "tokenizer", "vocab.json"), Json(target, "tokenizer", "vocab.json")));
        Assert.Equal(Merges(Path.Combine(TinyFolder, "tokenizer")), Merges(Path.Combine(target, "tokenizer")));
        var written = ClipTokenizer.FromFolder(Path.Combine(target, "tokenizer"));
        const string prompt = "a photo of a red circle on a blue background";
        Assert.Equal(model.Tokenizer.EncodeForModel(prompt), written.EncodeForModel(prompt));
        // The scheduler the model was loaded with (its prediction type resolved), named by its class.
        Assert.True(JsonNode.DeepEquals(model.SchedulerConfig, Json(target, "scheduler", "scheduler_config.json")));

        foreach (var onnx in expected.Where(f => f.EndsWith(".onnx", StringComparison.Ordinal)))
            OnnxChecker.AssertValid(Path.Combine(target, onnx));
        // The networks are small here: no external data in optimum's layout.
        Assert.DoesNotContain(Files(target), f => f.EndsWith("onnx_data", StringComparison.Ordinal));
    }

    [Fact]
    public void DiffusersLayoutNamesItsPipelineAndKeepsTheUnetWeightsInWeightsPb()
    {
        using var model = ModelLoader.Load(TinyFolder);
        var target = Path.Combine(temp, "tiny-diffusers");

        var result = OnnxPipelineExporter.Write(model, target, new OnnxExportOptions { Layout = OnnxLayout.Diffusers }, StandIns(model), [], [], null, default);

        var index = Json(target, "model_index.json");
        Assert.Equal("OnnxStableDiffusionPipeline", (string)index["_class_name"]!);
        Assert.Equal("""["diffusers","OnnxRuntimeModel"]""", index["vae_encoder"]!.ToJsonString());
        Assert.DoesNotContain("image_encoder", index.Select(kv => kv.Key));
        // diffusers' script always saves the UNet with external data in weights.pb; the others stay whole.
        Assert.Contains("unet/weights.pb", result.Files);
        Assert.Equal(["unet/weights.pb"], result.Files.Where(f => f.EndsWith(".pb", StringComparison.Ordinal) || f.Contains("_data", StringComparison.Ordinal)));
        var unet = OnnxFile.ReadStructure(Path.Combine(target, "unet", "model.onnx"));
        var external = unet.Graph.Initializer.Where(t => t.DataLocation == TensorProto.Types.DataLocation.External).ToList();
        Assert.NotEmpty(external);
        Assert.All(external, t => Assert.Equal("weights.pb", t.ExternalData.Single(e => e.Key == "location").Value));
        foreach (var onnx in result.Files.Where(f => f.EndsWith(".onnx", StringComparison.Ordinal)))
            OnnxChecker.AssertValid(Path.Combine(target, onnx));
    }

    [Fact]
    public void SdxlGetsItsSecondEncoderAndTokenizerAndIsRefusedInDiffusersLayout()
    {
        using var model = ModelLoader.Load(TinySdxlFolder);
        var target = Path.Combine(temp, "xl-onnx");

        var result = OnnxPipelineExporter.Write(model, target, new OnnxExportOptions(), StandIns(model), [], [], null, default);

        Assert.Contains("text_encoder_2/model.onnx", result.Files);
        Assert.Contains("tokenizer_2/vocab.json", result.Files);
        var index = Json(target, "model_index.json");
        Assert.Equal("ORTStableDiffusionXLPipeline", (string)index["_class_name"]!);
        Assert.Equal("""["diffusers","OnnxRuntimeModel"]""", index["text_encoder_2"]!.ToJsonString());
        Assert.Equal("""["transformers","CLIPTokenizer"]""", index["tokenizer_2"]!.ToJsonString());
        Assert.Equal("""["diffusers","EulerDiscreteScheduler"]""", index["scheduler"]!.ToJsonString());
        Assert.True((bool)index["force_zeros_for_empty_prompt"]!);
        Assert.Null(index["safety_checker"]);
        Assert.Equal("""["CLIPTextModelWithProjection"]""", Json(target, "text_encoder_2", "config.json")["architectures"]!.ToJsonString());
        // OpenCLIP's tokenizer pads with "!".
        Assert.Equal("!", (string)Json(target, "tokenizer_2", "special_tokens_map.json")["pad_token"]!);

        var refused = Path.Combine(temp, "xl-diffusers");
        var e = Assert.Throws<UserInputException>(() =>
            OnnxPipelineExporter.Write(model, refused, new OnnxExportOptions { Layout = OnnxLayout.Diffusers }, StandIns(model), [], [], null, default));
        Assert.Equal("layout", e.Subject);
        Assert.Contains("SDXL", e.Message);
        Assert.False(Directory.Exists(refused));
    }

    [Fact]
    public void LorasAreMergedAtTheirWeightsWhileTheNetworksAreBuiltAndUndoneAfter()
    {
        using var model = ModelLoader.Load(TinyFolder);
        var lora = WriteLora(model, Path.Combine(temp, "style.safetensors"));
        var unetWeight = ModuleWeight(model.Unet, UnetProbe);
        var textWeight = ModuleWeight(model.TextEncoder, TextEncoderProbe);
        var (unetBefore, textBefore) = (unetWeight.ToArray<float>(), textWeight.ToArray<float>());
        var target = Path.Combine(temp, "merged");

        var result = OnnxPipelineExporter.Write(model, target, new OnnxExportOptions(), StandIns(model),
            [new OnnxExportLora(lora, TextEncoderWeight: 0.7, UnetWeight: 0.7)], [], null, default);

        // The model is as it was: the merge was undone (the originals were kept aside, not subtracted back).
        Assert.Equal(unetBefore, unetWeight.ToArray<float>());
        Assert.Equal(textBefore, textWeight.ToArray<float>());
        // What was exported is exactly what LoraPatch makes of the same file at 0.7: the same arithmetic, bit for bit.
        float[] unetPatched, textPatched;
        using (var file = LoraFile.Load(lora))
        using (LoraPatch.Apply([new LoraApplication(file, 0.7)], LoraModelNames.Targets(model), LoraModelNames.AlternateNames(model.Unet)))
            (unetPatched, textPatched) = (unetWeight.ToArray<float>(), textWeight.ToArray<float>());
        Assert.NotEqual(unetBefore, unetPatched);
        Assert.Equal(unetPatched, Initializer(Path.Combine(target, "unet", "model.onnx"), UnetProbe + ".weight"));
        Assert.Equal(textPatched, Initializer(Path.Combine(target, "text_encoder", "model.onnx"), TextEncoderProbe + ".weight"));
        // The module that matches no layer is named in a warning; the rest were merged.
        Assert.Equal("LoRA style: 1 of 3 modules match no layer of the model and were left out (first: Unet no_such_layer)", Assert.Single(result.Warnings));
    }

    [Fact]
    public void ALoraThatMatchesNoLayerIsRefusedBeforeAnythingIsWritten()
    {
        using var model = ModelLoader.Load(TinyFolder);
        var lora = Path.Combine(temp, "elsewhere.safetensors");
        SafetensorsFile.Write(lora,
        [
            new SafetensorsTensor("lora_unet_no_such_layer.lora_down.weight", SafetensorsDType.F32, [2, 32], new byte[2 * 32 * 4]),
            new SafetensorsTensor("lora_unet_no_such_layer.lora_up.weight", SafetensorsDType.F32, [32, 2], new byte[32 * 2 * 4]),
        ]);
        var target = Path.Combine(temp, "out");

        var e = Assert.Throws<UserInputException>(() => OnnxPipelineExporter.Write(model, target, new OnnxExportOptions(), StandIns(model),
            [new OnnxExportLora(lora, 1, 1)], [], null, default));

        Assert.Equal(lora, e.Subject);
        Assert.Contains("matches no layer", e.Message);
        Assert.Equal(["elsewhere.safetensors"], Directory.GetFileSystemEntries(temp).Select(Path.GetFileName));
    }

    [Fact]
    public void ACancelledExportLeavesNothingUnderTheTargetNameOrBesideIt()
    {
        using var model = ModelLoader.Load(TinyFolder);
        using var cancel = new CancellationTokenSource();
        var lora = WriteLora(model, Path.Combine(temp, "style.safetensors"));
        var unetBefore = ModuleWeight(model.Unet, UnetProbe).ToArray<float>();
        var parent = Directory.CreateDirectory(Path.Combine(temp, "models")).FullName;
        var target = Path.Combine(parent, "tiny-onnx");
        // Stopped once the text encoder is on disk and the UNet is next: a part-written folder exists in its hidden temporary place.
        var progress = new Sync<string>(part =>
        {
            if (part == "unet") cancel.Cancel();
        });

        Assert.ThrowsAny<OperationCanceledException>(() => OnnxPipelineExporter.Write(model, target, new OnnxExportOptions(), StandIns(model),
            [new OnnxExportLora(lora, 1, 1)], [], progress, cancel.Token));

        Assert.Empty(Directory.GetFileSystemEntries(parent));
        Assert.Equal(unetBefore, ModuleWeight(model.Unet, UnetProbe).ToArray<float>());
    }

    [Fact]
    public void AnExistingFolderIsRefusedUnlessOverwriteIsAskedThenReplacedWhole()
    {
        using var model = ModelLoader.Load(TinyFolder);
        var target = Directory.CreateDirectory(Path.Combine(temp, "taken")).FullName;
        File.WriteAllText(Path.Combine(target, "mine.txt"), "keep me");

        var e = Assert.Throws<UserInputException>(() => OnnxPipelineExporter.Write(model, target, new OnnxExportOptions(), StandIns(model), [], [], null, default));
        Assert.Equal(target, e.Subject);
        Assert.Contains("already exists", e.Message);
        Assert.Equal(["mine.txt"], Files(target));

        OnnxPipelineExporter.Write(model, target, new OnnxExportOptions { Overwrite = true }, StandIns(model), [], [], null, default);
        Assert.DoesNotContain("mine.txt", Files(target));
        Assert.Contains("unet/model.onnx", Files(target));
        Assert.Equal(["taken"], Directory.GetFileSystemEntries(temp).Select(Path.GetFileName));

        var file = Path.Combine(temp, "file");
        File.WriteAllText(file, "");
        Assert.Contains("is a file", Assert.Throws<UserInputException>(() =>
            OnnxPipelineExporter.Write(model, file, new OnnxExportOptions { Overwrite = true }, StandIns(model), [], [], null, default)).Message);
        Assert.Equal("opset", Assert.Throws<UserInputException>(() =>
            OnnxPipelineExporter.Write(model, Path.Combine(temp, "old"), new OnnxExportOptions { Opset = 13 }, StandIns(model), [], [], null, default)).Subject);
    }

    // ---- the real builders ----

    [Theory]
    [InlineData(OnnxLayout.Optimum)]
    [InlineData(OnnxLayout.Diffusers)]
    public void TheBuiltNetworksPassTheOnnxCheckerWithEachLayoutsInputs(OnnxLayout layout)
    {
        using var model = ModelLoader.Load(TinyFolder);
        var target = Path.Combine(temp, layout.ToString());

        var result = OnnxPipelineExporter.Export(model, target, new OnnxExportOptions { Layout = layout });

        var onnx = result.Files.Where(f => f.EndsWith(".onnx", StringComparison.Ordinal)).ToList();
        Assert.Equal(["text_encoder/model.onnx", "unet/model.onnx", "vae_decoder/model.onnx", "vae_encoder/model.onnx"], onnx);
        foreach (var file in onnx) OnnxChecker.AssertValid(Path.Combine(target, file));
        var unet = OnnxFile.ReadStructure(Path.Combine(target, "unet", "model.onnx"));
        Assert.Equal(["sample", "timestep", "encoder_hidden_states"], unet.Graph.Input.Select(i => i.Name));
        Assert.Equal("out_sample", Assert.Single(unet.Graph.Output).Name);
        // optimum: int64 ids, a rank-0 timestep, the encoder's mean and log-variance; diffusers: int32 ids, timestep [B], a sample.
        var ids = OnnxFile.ReadStructure(Path.Combine(target, "text_encoder", "model.onnx")).Graph.Input.Single(i => i.Name == "input_ids");
        Assert.Equal(layout == OnnxLayout.Optimum ? (int)DataType.Int64 : (int)DataType.Int32, ids.Type.TensorType.ElemType);
        var timestep = unet.Graph.Input.Single(i => i.Name == "timestep");
        Assert.Equal(layout == OnnxLayout.Optimum ? 0 : 1, timestep.Type.TensorType.Shape.Dim.Count);
        var encoderOutput = OnnxFile.ReadStructure(Path.Combine(target, "vae_encoder", "model.onnx")).Graph.Output[0].Name;
        Assert.Equal(layout == OnnxLayout.Optimum ? "latent_parameters" : "latent_sample", encoderOutput);
    }

    [Fact]
    public void SdxlIsExportedWithBothEncodersAndTheUnetsAddedConditions()
    {
        using var model = ModelLoader.Load(TinySdxlFolder);
        var target = Path.Combine(temp, "xl");

        var result = OnnxPipelineExporter.Export(model, target, new OnnxExportOptions());

        var onnx = result.Files.Where(f => f.EndsWith(".onnx", StringComparison.Ordinal)).ToList();
        Assert.Equal(["text_encoder/model.onnx", "text_encoder_2/model.onnx", "unet/model.onnx", "vae_decoder/model.onnx", "vae_encoder/model.onnx"], onnx);
        foreach (var file in onnx) OnnxChecker.AssertValid(Path.Combine(target, file));
        var unet = OnnxFile.ReadStructure(Path.Combine(target, "unet", "model.onnx"));
        Assert.Equal(["sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids"], unet.Graph.Input.Select(i => i.Name));
        Assert.Contains("text_embeds", OnnxFile.ReadStructure(Path.Combine(target, "text_encoder_2", "model.onnx")).Graph.Output.Select(o => o.Name));
    }

    [Fact]
    public void AFloat16ExportStoresHalfWeightsAndSaysSoInTheTextEncodersConfig()
    {
        using var model = ModelLoader.Load(TinyFolder);
        var target = Path.Combine(temp, "half");

        OnnxPipelineExporter.Export(model, target, new OnnxExportOptions { Precision = OnnxPrecision.Float16 });

        Assert.Equal("float16", (string)Json(target, "text_encoder", "config.json")["torch_dtype"]!);
        var weight = OnnxFile.ReadStructure(Path.Combine(target, "unet", "model.onnx")).Graph.Initializer.Single(t => t.Name == UnetProbe + ".weight.T");
        Assert.Equal((int)DataType.Float16, weight.DataType);
        OnnxChecker.AssertValid(Path.Combine(target, "unet", "model.onnx"));
    }

    [Fact]
    public void ALoraAt07ChangesTheBuiltUnetAndTextEncoderAsLoraPatchDoes()
    {
        using var model = ModelLoader.Load(TinyFolder);
        var lora = WriteLora(model, Path.Combine(temp, "style.safetensors"));
        var unetWeight = ModuleWeight(model.Unet, UnetProbe);
        var textWeight = ModuleWeight(model.TextEncoder, TextEncoderProbe);
        var target = Path.Combine(temp, "merged");

        var result = OnnxPipelineExporter.Export(model, target, new OnnxExportOptions(), [new OnnxExportLora(lora, 0.7, 0.7)]);

        float[] unetPatched, textPatched;
        using (var file = LoraFile.Load(lora))
        using (LoraPatch.Apply([new LoraApplication(file, 0.7)], LoraModelNames.Targets(model), LoraModelNames.AlternateNames(model.Unet)))
        {
            using var tokens = unetWeight.Reshape(unetWeight.Size(0), unetWeight.Size(1)).T().Contiguous();
            unetPatched = tokens.ToArray<float>();
            using var transposed = textWeight.T().Contiguous();
            textPatched = transposed.ToArray<float>();
        }
        // fp32 initializers hold libtorch's float32 bytes, so the comparison is exact. SD 1.x's proj_in, a 1x1
        // convolution, runs as a MatMul on the tokens, so it is stored as [in, out], as a Linear's weight is.
        Assert.Equal(unetPatched, Initializer(Path.Combine(target, "unet", "model.onnx"), UnetProbe + ".weight.T"));
        Assert.Equal(textPatched, Initializer(Path.Combine(target, "text_encoder", "model.onnx"), TextEncoderProbe + ".weight.T"));
        Assert.Single(result.Warnings);
    }

    [Fact]
    public void ATextualInversionTokenIsBakedIntoTheTableTheTokenizerAndTheConfig()
    {
        using var model = ModelLoader.Load(TinyFolder);
        var width = model.TextEncoder.Config.HiddenSize;
        var vectors = new float[2 * width];
        for (var i = 0; i < vectors.Length; i++) vectors[i] = (i % 17) / 17f - 0.5f;
        var embedding = Path.Combine(temp, "zwx.safetensors");
        TextualInversionFile.WriteSafetensors(embedding, MemoryMarshal.AsBytes(vectors.AsSpan()).ToArray(), [2, width]);
        var target = Path.Combine(temp, "baked");

        OnnxPipelineExporter.Export(model, target, new OnnxExportOptions(), embeddingFiles: [embedding]);

        var rows = model.TextEncoder.Config.VocabSize;
        var tokenizer = ClipTokenizer.FromFolder(Path.Combine(target, "tokenizer"));
        Assert.True(tokenizer.HasAddedToken("zwx"));
        Assert.Equal(rows, tokenizer.TokenToId("zwx"));
        Assert.Equal(rows + 1, tokenizer.TokenToId("zwx_1"));
        Assert.Equal(rows + 2, (int)Json(target, "text_encoder", "config.json")["vocab_size"]!);
        var table = Initializer(Path.Combine(target, "text_encoder", "model.onnx"), "text_model.embeddings.token_embedding.weight");
        Assert.Equal((rows + 2) * width, table.Length);
        Assert.Equal(vectors, table[(rows * width)..]);
        // The model itself is untouched: its tokenizer has no such token.
        Assert.False(model.Tokenizer.HasAddedToken("zwx"));
    }

    // ---- helpers ----

    /// <summary>
    /// One small graph per network in the folders the exporter writes: each holds one weight of its component as the
    /// model has it when the graph is built, under its diffusers name, so a merge's timing can be read back.
    /// </summary>
    private static List<OnnxPipelineExporter.OnnxNetwork> StandIns(StableDiffusionModel model)
    {
        var networks = new List<OnnxPipelineExporter.OnnxNetwork>
        {
            new("text_encoder", _ => Holding(model.TextEncoder, TextEncoderProbe), "text_encoder"),
        };
        if (model.TextEncoder2 is { } te2) networks.Add(new("text_encoder_2", _ => Holding(te2, TextEncoderProbe), "text_encoder_2"));
        // SDXL's first down block has no attention.
        networks.Add(new("unet", _ => Holding(model.Unet, model.IsSdxl ? "conv_in" : UnetProbe), "unet"));
        networks.Add(new("vae_encoder", _ => Holding(model.Vae, "encoder.conv_in"), "vae"));
        networks.Add(new("vae_decoder", _ => Holding(model.Vae, "decoder.conv_in"), "vae"));
        return networks;
    }

    private static ModelProto Holding(Module root, string modulePath)
    {
        var graph = new OnnxGraph("stand_in");
        var weight = graph.Initializer(modulePath + ".weight", ModuleWeight(root, modulePath));
        graph.Output("weight", graph.Op("Identity", [weight]), DataType.Float, [.. ModuleWeight(root, modulePath).Shape.Select(d => (Dim)d)]);
        return graph.ToModel();
    }

    private static Tensor ModuleWeight(Module root, string path) => root.NamedModules().Single(m => m.Name == path).Module switch
    {
        Linear linear => linear.Weight,
        Conv2d conv => conv.Weight,
        var other => throw new InvalidOperationException($"{path} is a {other.GetType().Name}"),
    };

    /// <summary>A LoRA of rank 2 on the UNet probe (a 1x1 conv) and the text encoder probe (a Linear), plus a module that matches nothing.</summary>
    private static string WriteLora(StableDiffusionModel model, string path)
    {
        var random = new Random(11);
        byte[] Floats(params long[] shape) =>
            MemoryMarshal.AsBytes(Enumerable.Range(0, (int)shape.Aggregate(1L, (a, b) => a * b)).Select(_ => (float)random.NextDouble() - 0.5f).ToArray().AsSpan()).ToArray();
        var tensors = new List<SafetensorsTensor>();
        void Module(string name, long[] down, long[] up)
        {
            tensors.Add(new SafetensorsTensor(name + ".lora_down.weight", SafetensorsDType.F32, down, Floats(down)));
            tensors.Add(new SafetensorsTensor(name + ".lora_up.weight", SafetensorsDType.F32, up, Floats(up)));
            tensors.Add(new SafetensorsTensor(name + ".alpha", SafetensorsDType.F32, [], BitConverter.GetBytes(1f)));
        }
        var conv = ModuleWeight(model.Unet, UnetProbe).Shape;
        Module("lora_unet_" + UnetProbe.Replace('.', '_'), [2, conv[1], 1, 1], [conv[0], 2, 1, 1]);
        var linear = ModuleWeight(model.TextEncoder, TextEncoderProbe).Shape;
        Module("lora_te_" + TextEncoderProbe.Replace('.', '_'), [2, linear[1]], [linear[0], 2]);
        Module("lora_unet_no_such_layer", [2, 4], [4, 2]);
        SafetensorsFile.Write(path, tensors);
        return path;
    }

    private static float[] Initializer(string modelPath, string name)
    {
        var tensor = OnnxFile.ReadStructure(modelPath).Graph.Initializer.Single(t => t.Name == name);
        return MemoryMarshal.Cast<byte, float>(tensor.RawData.Span).ToArray();
    }

    private static string[] Merges(string folder) => [.. File.ReadAllLines(Path.Combine(folder, "merges.txt")).Where(l => !l.StartsWith("#version", StringComparison.Ordinal) && l.Length > 0)];

    private static string[] Files(string folder) =>
        [.. Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(folder, f).Replace('\\', '/')).Order(StringComparer.Ordinal)];

    private static JsonObject Json(params string[] path) => JsonNode.Parse(File.ReadAllText(Path.Combine(path)))!.AsObject();

    /// <summary>Progress reported on the exporter's own thread (Progress&lt;T&gt; would post it elsewhere, too late to cancel from).</summary>
    private sealed class Sync<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
