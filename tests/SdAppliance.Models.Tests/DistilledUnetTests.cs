using System.Text.Json;
using System.Text.Json.Nodes;
using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.Conversion;
using SdAppliance.Models.Loading;
using SdAppliance.Models.Unet;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using SdAppliance.Torch.Serialization;
using static SdAppliance.Models.Tests.UnetVaeFixtures;

namespace SdAppliance.Models.Tests;

/// <summary>
/// Distilled SDXL UNets (SSD-1B and the like): transformer depths per block and per layer, an up path of its own,
/// a one-resnet mid block; read from diffusers configs, and inferred from a single file's tensors instead of the
/// base model's, so a folder written as a single file loads back as itself.
/// </summary>
public sealed class DistilledUnetTests : IDisposable
{
    private static readonly string TinySdxl = Fixture("tiny-sdxl");
    private readonly string temp = Directory.CreateTempSubdirectory("sdapp-distilled-").FullName;

    public void Dispose() => Directory.Delete(temp, recursive: true);

    private static JsonElement Architecture(string model)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Fixture("architectures", model + ".json")));
        return doc.RootElement.Clone();
    }

    private static UNet2DConditionConfig ArchitectureConfig(string model) =>
        UNet2DConditionConfig.Parse(Architecture(model).GetProperty("configs").GetProperty("unet").GetRawText());

    // The UNet names of the model's single-file list, as the loader maps them to diffusers.
    private static List<string> SingleFileUnetNames(string model)
    {
        var ldm = Architecture(model).GetProperty("ldm").EnumerateObject()
            .Where(p => p.Name.StartsWith(LdmKeyMap.UnetPrefix, StringComparison.Ordinal))
            .ToDictionary(p => p.Name, p => p.Value.EnumerateArray().Select(d => d.GetInt64()).ToArray());
        return [.. LdmKeyMap.ToDiffusers(ldm).Component(ModelComponents.Unet).Select(r => r.Target.Name)];
    }

    [Fact]
    public void Ssd1bAndVegaConfigsGiveTheirDepthsAndAOneResnetMidBlock()
    {
        var ssd1b = ArchitectureConfig("ssd1b");
        Assert.Equal([[1, 1], [2, 2], [4, 4]], ssd1b.DownTransformerDepths);
        Assert.Equal([[4, 4, 10], [2, 1, 1], [1, 1, 1]], ssd1b.UpTransformerDepths);  // asymmetric: its own up path
        Assert.Equal("UNetMidBlock2D", ssd1b.MidBlockType);
        var vega = ArchitectureConfig("vega");
        Assert.Equal([[1, 1], [1, 1], [2, 2]], vega.DownTransformerDepths);
        Assert.Equal([[2, 2, 2], [1, 1, 1], [1, 1, 1]], vega.UpTransformerDepths);  // symmetric: the down path's, reversed
        Assert.Equal("UNetMidBlock2D", vega.MidBlockType);
    }

    [Fact]
    public void PerLayerDepthsNeedTheirOwnUpPathAndRoundTrip()
    {
        const string json = """{"block_out_channels": [32, 64], "layers_per_block": 2, "transformer_layers_per_block": [1, [2, 3]], "reverse_transformer_layers_per_block": [[3, 2, 1], 1]}""";
        var config = UNet2DConditionConfig.Parse(json);
        Assert.Equal([[1, 1], [2, 3]], config.DownTransformerDepths);
        Assert.Equal([[3, 2, 1], [1, 1, 1]], config.UpTransformerDepths);
        Assert.Equal(2, config.MidTransformerDepth);  // diffusers gives the mid block the last block's first value
        var again = UNet2DConditionConfig.Parse(config.ToJson());
        Assert.Equal(config.DownTransformerDepths, again.DownTransformerDepths);
        Assert.Equal(config.UpTransformerDepths, again.UpTransformerDepths);
        // Written back as diffusers writes them: numbers where a block has one value.
        var written = JsonNode.Parse(config.ToJson())!;
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("[1, [2, 3]]"), written["transformer_layers_per_block"]), written.ToJsonString());
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("[[3, 2, 1], 1]"), written["reverse_transformer_layers_per_block"]), written.ToJsonString());
    }

    [Theory]
    [InlineData("""{"transformer_layers_per_block": [1, [2, 3]]}""", "transformer_layers_per_block", "reverse_transformer_layers_per_block")]
    [InlineData("""{"transformer_layers_per_block": [1, [2, 3, 4]], "reverse_transformer_layers_per_block": [1, 1]}""", "transformer_layers_per_block[1]", "3 values for the 2 layers")]
    [InlineData("""{"transformer_layers_per_block": [1, 2], "reverse_transformer_layers_per_block": [[1, 1]]}""", "reverse_transformer_layers_per_block", "one per up block")]
    [InlineData("""{"transformer_layers_per_block": [1, 2], "reverse_transformer_layers_per_block": [[1, 1], [1, 1, 1]]}""", "reverse_transformer_layers_per_block[0]", "2 values for the 3 layers")]
    [InlineData("""{"transformer_layers_per_block": [1, [2, 0]], "reverse_transformer_layers_per_block": [1, 1]}""", "transformer_layers_per_block[1][1]", "is 0")]
    [InlineData("""{"transformer_layers_per_block": [1, [[2]]]}""", "transformer_layers_per_block", "nested")]
    public void BadDepthsAreRefusedNamingTheField(string depths, string field, string problem)
    {
        var node = JsonNode.Parse(depths)!.AsObject();
        node["block_out_channels"] = new JsonArray(32, 64);
        node["layers_per_block"] = 2;
        node["down_block_types"] = new JsonArray("DownBlock2D", "CrossAttnDownBlock2D");
        node["up_block_types"] = new JsonArray("CrossAttnUpBlock2D", "UpBlock2D");
        var file = Path.Combine(temp, "config.json");
        File.WriteAllText(file, node.ToJsonString());
        var e = Assert.Throws<ModelConfigException>(() => DiffusersConfig.Load<UNet2DConditionConfig>(file));
        Assert.True(e.Message.Contains(field, StringComparison.Ordinal) && e.Message.Contains(problem, StringComparison.Ordinal)
            && e.Message.Contains(file, StringComparison.Ordinal), e.Message);
    }

    [Theory]
    [InlineData("ssd1b")]
    [InlineData("vega")]
    public void ASingleFilesKeysGiveItsConfigFromTheBaseModels(string model)
    {
        var sdxl = ArchitectureConfig("sdxl_base");
        var fitted = UnetConfigInference.FitDepths(sdxl, SingleFileUnetNames(model), model + ".safetensors");
        var published = ArchitectureConfig(model);
        AssertSameDepths(published, fitted);
        // Written as the published config writes them: a reverse list only for the asymmetric UNet.
        Assert.Equal(published.ReverseTransformerLayersPerBlock?.Select(d => d.ToArray()), fitted.ReverseTransformerLayersPerBlock?.Select(d => d.ToArray()));
        Assert.Equal(published.TransformerLayersPerBlock.Select(d => d.ToArray()), fitted.TransformerLayersPerBlock.Select(d => d.ToArray()));

        // The base model's own file gives back its config untouched.
        Assert.Same(sdxl, UnetConfigInference.FitDepths(sdxl, SingleFileUnetNames("sdxl_base"), "sdxl.safetensors"));
    }

    [Fact]
    public void AMidBlockDeeperThanADiffusersConfigCanSayIsRefused()
    {
        var config = TinyDistilledConfig("""{"transformer_layers_per_block": [1, 1, 2]}""");
        using (Init.Skip())
        using (var unet = new UNet2DConditionModel(config))
        {
            using var state = unet.StateDict();
            // Its mid block given one transformer block more than the last down block's first attention has.
            var names = state.Keys.Append("mid_block.attentions.0.transformer_blocks.2.norm1.weight").ToList();
            var e = Assert.Throws<UserInputException>(() => UnetConfigInference.FitDepths(config, names, "odd.safetensors"));
            Assert.Contains("odd.safetensors", e.Message, StringComparison.Ordinal);
            Assert.Contains("mid block has 3 transformer blocks", e.Message, StringComparison.Ordinal);
        }
    }

    // The tiny SDXL (depths [1, 2, 3], a cross-attention mid block) with the given config keys changed.
    private static UNet2DConditionConfig TinyDistilledConfig(string changes) => UNet2DConditionConfig.Parse(DistilledConfigJson(changes));

    private static string DistilledConfigJson(string changes)
    {
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(TinySdxl, "unet", "config.json")))!.AsObject();
        foreach (var (key, value) in JsonNode.Parse(changes)!.AsObject()) config[key] = value?.DeepClone();
        return config.ToJsonString();
    }

    public static TheoryData<string> DistilledShapes =>
    [
        // SSD-1B's pattern: fewer blocks in the deepest level, one resnet in the middle.
        """{"transformer_layers_per_block": [1, 1, 2], "mid_block_type": "UNetMidBlock2D"}""",
        // Asymmetric: per-layer depths and an up path of its own, a cross-attention mid block of the last block's first depth.
        """{"transformer_layers_per_block": [1, [2, 1], [3, 1]], "reverse_transformer_layers_per_block": [[1, 2, 3], [2, 1, 1], 1]}""",
    ];

    [Theory]
    [MemberData(nameof(DistilledShapes))]
    public void AFolderWrittenAsASingleFileLoadsAndConvertsBackAsItself(string changes)
    {
        // A diffusers folder: the tiny SDXL with a distilled UNet of random weights.
        var folder = Path.Combine(temp, "distilled");
        CopyTree(TinySdxl, folder);
        var unetJson = DistilledConfigJson(changes);
        File.WriteAllText(Path.Combine(folder, "unet", "config.json"), unetJson);
        var config = UNet2DConditionConfig.Parse(unetJson);
        using (var generator = new Generator(11))
        using (var unet = new UNet2DConditionModel(config, new(Generator: generator)))
        using (var state = unet.StateDict())
            TensorFiles.Save(Path.Combine(folder, "unet", "diffusion_pytorch_model.safetensors"), state);

        // Our writer makes the single file; the tokenizers lie beside it.
        var single = Path.Combine(temp, "single");
        Directory.CreateDirectory(single);
        var file = Path.Combine(single, "distilled.safetensors");
        ModelConverter.Convert(folder, file);
        CopyTree(Path.Combine(TinySdxl, "tokenizer"), Path.Combine(single, "tokenizer"));
        CopyTree(Path.Combine(TinySdxl, "tokenizer_2"), Path.Combine(single, "tokenizer_2"));

        // The family's standard configs are the tiny SDXL's own (the base model's depths), as models/configs/sdxl_base is for SDXL.
        var root = Path.Combine(temp, "root");
        CopyTree(TinySdxl, Path.Combine(root, "models", "configs", "sdxl_base"));

        using (var loaded = ModelLoader.Load(file, new ModelLoadOptions(SearchRoots: [root])))
        using (var reference = ModelLoader.Load(folder))
        {
            AssertSameDepths(config, loaded.Unet.Config);
            using var expected = reference.Unet.StateDict();
            using var actual = loaded.Unet.StateDict();
            Assert.Equal(expected.Keys, actual.Keys);
            foreach (var (name, tensor) in expected)
                Assert.True(tensor.ToArray<float>().AsSpan().SequenceEqual(actual[name].ToArray<float>()), $"{name} differs");
        }

        var back = Path.Combine(temp, "back");
        ModelConverter.Convert(file, back, new ConversionOptions(SearchRoots: [root]));
        AssertSameDepths(config, DiffusersConfig.Load<UNet2DConditionConfig>(Path.Combine(back, "unet", "config.json")));
        using var before = TensorFile.Open(Path.Combine(folder, "unet", "diffusion_pytorch_model.safetensors"));
        using var after = TensorFile.Open(Path.Combine(back, "unet", "diffusion_pytorch_model.safetensors"));
        Assert.Equal(before.Shapes.Keys.Order(StringComparer.Ordinal), after.Shapes.Keys.Order(StringComparer.Ordinal));
        foreach (var name in before.Shapes.Keys)
            Assert.True(before.ReadBytes(name).AsSpan().SequenceEqual(after.ReadBytes(name)), $"{name} differs");
    }

    private static void AssertSameDepths(UNet2DConditionConfig expected, UNet2DConditionConfig actual)
    {
        Assert.Equal(expected.DownTransformerDepths, actual.DownTransformerDepths);
        Assert.Equal(expected.UpTransformerDepths, actual.UpTransformerDepths);
        Assert.Equal(expected.MidBlockType, actual.MidBlockType);
        if (expected.MidBlockType == "UNetMidBlock2DCrossAttn") Assert.Equal(expected.MidTransformerDepth, actual.MidTransformerDepth);
    }

    private static void CopyTree(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var file in Directory.GetFiles(from)) File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
        foreach (var dir in Directory.GetDirectories(from)) CopyTree(dir, Path.Combine(to, Path.GetFileName(dir)));
    }
}
