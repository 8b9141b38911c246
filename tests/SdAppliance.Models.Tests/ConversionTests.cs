using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Formats;
using SdAppliance.Models.Conversion;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;

namespace SdAppliance.Models.Tests;

/// <summary>
/// The converter against the reference: tiny-sd.ldm.safetensors was written by diffusers'
/// convert_diffusers_to_original_stable_diffusion.py from the tiny-sd folder, so both directions
/// must reproduce the other fixture exactly (names, dtypes, shapes, bytes).
/// </summary>
public sealed class ConversionTests : IDisposable
{
    private static readonly string Fixtures = Path.Combine(AppContext.BaseDirectory, "Fixtures");
    private static readonly string TinyFolder = Path.Combine(Fixtures, "tiny-sd");
    private static readonly string TinyLdm = Path.Combine(Fixtures, "tiny-sd.ldm.safetensors");
    private static readonly string[] Components = ["unet", "vae", "text_encoder"];
    private readonly string temp = Directory.CreateTempSubdirectory("sdapp-convert-").FullName;

    public void Dispose() => Directory.Delete(temp, recursive: true);

    private static string WeightsOf(string folder, string component) =>
        Path.Combine(folder, component, component.StartsWith("text_encoder", StringComparison.Ordinal) ? "model.safetensors" : "diffusion_pytorch_model.safetensors");

    /// <summary>Every tensor of <paramref name="actual"/> (any format we read) equals <paramref name="expected"/>'s: names, dtype, shape, bytes.</summary>
    private static void AssertSameTensors(string expected, string actual)
    {
        using var e = TensorFile.Open(expected);
        using var a = TensorFile.Open(actual);
        Assert.Equal(e.Shapes.Keys.Order(StringComparer.Ordinal), a.Shapes.Keys.Order(StringComparer.Ordinal));
        foreach (var (name, shape) in e.Shapes)
        {
            Assert.Equal(shape, a.Shapes[name]);
            Assert.Equal(e.DTypeOf(name), a.DTypeOf(name));
            Assert.True(e.ReadBytes(name).AsSpan().SequenceEqual(a.ReadBytes(name)), $"{name} differs");
        }
    }

    private static void AssertSameFolderWeights(string expectedFolder, string actualFolder)
    {
        foreach (var component in Components)
            AssertSameTensors(WeightsOf(expectedFolder, component), WeightsOf(actualFolder, component));
    }

    [Fact]
    public void FolderToSafetensorsReproducesTheReferenceFile()
    {
        var output = Path.Combine(temp, "tiny.safetensors");
        var result = ModelConverter.Convert(TinyFolder, output);

        Assert.Equal(ModelFormat.Safetensors, result.Format);
        Assert.Equal(ModelFamily.V1, result.Family);
        Assert.Equal(600, result.TensorCount);
        Assert.Empty(result.Warnings);
        AssertSameTensors(TinyLdm, output);
        // Our writer lays files out as the reference's does and neither writes metadata, so even the header matches.
        Assert.Equal(File.ReadAllBytes(TinyLdm), File.ReadAllBytes(output));
    }

    [Fact]
    public void SingleFileToFolderReproducesTheFixtureFolder()
    {
        var output = Path.Combine(temp, "tiny");
        var result = ModelConverter.Convert(TinyLdm, output, new ConversionOptions(ConfigDirectory: TinyFolder));

        Assert.Equal(ModelFormat.Diffusers, result.Format);
        AssertSameFolderWeights(TinyFolder, output);
        foreach (var component in new[] { "unet", "vae" })
            Assert.Equal(File.ReadAllText(Path.Combine(TinyFolder, component, "config.json")), File.ReadAllText(Path.Combine(output, component, "config.json")));
        Assert.True(JsonNode.DeepEquals(ReadJson(TinyFolder, "text_encoder", "config.json"), ReadJson(output, "text_encoder", "config.json")));
        Assert.True(JsonNode.DeepEquals(ReadJson(TinyFolder, "scheduler", "scheduler_config.json"), ReadJson(output, "scheduler", "scheduler_config.json")));
        // The --config folder's tokenizer is the one a single file gets, as in diffusers' from_single_file(config=...).
        foreach (var file in Directory.GetFiles(Path.Combine(TinyFolder, "tokenizer")))
            Assert.Equal(File.ReadAllBytes(file), File.ReadAllBytes(Path.Combine(output, "tokenizer", Path.GetFileName(file))));
        Assert.True(JsonNode.DeepEquals(ReadJson(TinyFolder, "model_index.json"), ReadJson(output, "model_index.json")),
            "model_index.json is what diffusers wrote for the fixture");
        Assert.Empty(Directory.GetFileSystemEntries(temp, ".*"));  // no temp folder left beside it
    }

    private static JsonNode ReadJson(params string[] parts) => JsonNode.Parse(File.ReadAllText(Path.Combine(parts)))!;

    [Fact]
    public void RoundTripThroughCkptGivesBackEveryTensor()
    {
        var ckpt = Path.Combine(temp, "tiny.ckpt");
        ModelConverter.Convert(TinyFolder, ckpt);
        using (var checkpoint = TorchCheckpoint.Open(ckpt))
            Assert.Equal("state_dict", checkpoint.StateDict().Path);  // A1111's {"state_dict": ...}
        AssertSameTensors(TinyLdm, ckpt);

        var back = Path.Combine(temp, "back");
        ModelConverter.Convert(ckpt, back, new ConversionOptions(ConfigDirectory: TinyFolder));
        AssertSameFolderWeights(TinyFolder, back);

        // Single file to single file keeps every tensor as it is.
        var safetensors = Path.Combine(temp, "again.safetensors");
        ModelConverter.Convert(ckpt, safetensors);
        Assert.Equal(File.ReadAllBytes(TinyLdm), File.ReadAllBytes(safetensors));
    }

    [Fact]
    public void HalfStoresFloat16AsTorchRoundsIt()
    {
        var output = Path.Combine(temp, "half.safetensors");
        var result = ModelConverter.Convert(TinyFolder, output, new ConversionOptions(Half: true));
        Assert.Equal(600, result.TensorCount);

        using var reference = SafetensorsFile.Open(TinyLdm);
        using var half = SafetensorsFile.Open(output);
        Assert.Equal(reference.Names.Order(StringComparer.Ordinal), half.Names.Order(StringComparer.Ordinal));
        foreach (var entry in reference.Tensors)
        {
            var converted = half[entry.Name];
            Assert.Equal(SafetensorsDType.F16, converted.DType);
            Assert.Equal(entry.Shape, converted.Shape);
            var floats = MemoryMarshal.Cast<byte, float>(reference.GetSpan(entry));
            var halves = MemoryMarshal.Cast<byte, Half>(half.GetSpan(converted));
            // Exact: rounding to nearest even is one answer, and System.Half gives it.
            var wrong = -1;
            for (var i = 0; i < floats.Length && wrong < 0; i++)
                if (BitConverter.HalfToUInt16Bits((Half)floats[i]) != BitConverter.HalfToUInt16Bits(halves[i])) wrong = i;
            Assert.True(wrong < 0, $"{entry.Name}[{wrong}] is not {floats[Math.Max(wrong, 0)]} rounded to float16");
            // And the engine's float16 (what torch's .half() gives) is the same bytes.
            using var t = torch.FromBytes(reference.GetSpan(entry), [.. entry.Shape], DType.Float32);
            using var h = t.To(DType.Float16);
            Assert.True(h.ToBytes().AsSpan().SequenceEqual(half.GetSpan(converted)), $"{entry.Name}: torch rounds differently");
        }
    }

    [Fact]
    public void HalfKeepsIntegerBuffersAndNarrowsBFloat16()
    {
        // Older transformers saved position_ids (int64) in the text encoder; a bf16 tensor checks the other widening path.
        var input = Path.Combine(temp, "mixed.safetensors");
        long[] ids = [.. Enumerable.Range(0, 77).Select(i => (long)i)];
        float[] values = [1f / 3, -2.5e-8f, 65504f, 70000f, float.NegativeInfinity, 1.0009765625f, 0.1f, -0.0f];
        var bf16 = values.SelectMany(v => BitConverter.GetBytes((ushort)(BitConverter.SingleToInt32Bits(v) >> 16))).ToArray();
        SafetensorsFile.Write(input,
        [
            new SafetensorsTensor("cond_stage_model.transformer.text_model.embeddings.position_ids", SafetensorsDType.I64, [1, 77], MemoryMarshal.AsBytes(ids.AsSpan()).ToArray()),
            new SafetensorsTensor("model.diffusion_model.out.2.bias", SafetensorsDType.BF16, [values.Length], bf16),
        ]);

        var output = Path.Combine(temp, "mixed.ckpt");
        ModelConverter.Convert(input, output, new ConversionOptions(Half: true));

        using var file = TensorFile.Open(output);
        Assert.Equal(SafetensorsDType.I64, file.DTypeOf("cond_stage_model.transformer.text_model.embeddings.position_ids"));
        Assert.Equal(MemoryMarshal.AsBytes(ids.AsSpan()).ToArray(), file.ReadBytes("cond_stage_model.transformer.text_model.embeddings.position_ids"));
        Assert.Equal(SafetensorsDType.F16, file.DTypeOf("model.diffusion_model.out.2.bias"));
        using var t = torch.FromBytes(bf16, [values.Length], DType.BFloat16);
        using var h = t.To(DType.Float16);
        Assert.Equal(h.ToBytes(), file.ReadBytes("model.diffusion_model.out.2.bias"));
    }

    [Fact]
    public void TheConvertedFolderLoadsWithTheSameWeights()
    {
        var output = Path.Combine(temp, "tiny");
        ModelConverter.Convert(TinyLdm, output, new ConversionOptions(ConfigDirectory: TinyFolder));
        using var model = ModelLoader.Load(output);
        using var original = ModelLoader.Load(TinyFolder);
        Assert.Equal(original.DefaultResolution, model.DefaultResolution);
        Assert.Equal(original.Tokenizer.PadId, model.Tokenizer.PadId);
        using var a = model.Unet.StateDict();
        using var b = original.Unet.StateDict();
        foreach (var (name, tensor) in b)
            Assert.True(tensor.ToBytes().AsSpan().SequenceEqual(a[name].ToBytes()), name);
    }

    [Fact]
    public void ReplacesAModelFolderButNotAnyOtherFolder()
    {
        var output = Path.Combine(temp, "tiny");
        ModelConverter.Convert(TinyLdm, output, new ConversionOptions(ConfigDirectory: TinyFolder));
        File.WriteAllText(Path.Combine(output, "stale.txt"), "from before");
        ModelConverter.Convert(TinyLdm, output, new ConversionOptions(ConfigDirectory: TinyFolder));
        Assert.False(File.Exists(Path.Combine(output, "stale.txt")));
        AssertSameFolderWeights(TinyFolder, output);

        var documents = Directory.CreateDirectory(Path.Combine(temp, "documents")).FullName;
        File.WriteAllText(Path.Combine(documents, "keep.txt"), "mine");
        var e = Assert.Throws<UserInputException>(() => ModelConverter.Convert(TinyLdm, documents, new ConversionOptions(ConfigDirectory: TinyFolder)));
        Assert.Contains("not a diffusers model", e.Message);
        Assert.True(File.Exists(Path.Combine(documents, "keep.txt")));
        Assert.Empty(Directory.GetFileSystemEntries(temp, ".*"));
    }

    [Fact]
    public void AnInterruptedConversionLeavesNothingBehind()
    {
        foreach (var output in new[] { Path.Combine(temp, "tiny"), Path.Combine(temp, "tiny.safetensors"), Path.Combine(temp, "tiny.ckpt") })
        {
            using var cancel = new CancellationTokenSource();
            var progress = new Callback(p =>
            {
                if (p.Done == 10) cancel.Cancel();
            });
            var input = output.EndsWith("tiny", StringComparison.Ordinal) ? TinyLdm : TinyFolder;
            Assert.ThrowsAny<OperationCanceledException>(() =>
                ModelConverter.Convert(input, output, new ConversionOptions(ConfigDirectory: TinyFolder), progress, cancel.Token));
            Assert.Empty(Directory.GetFileSystemEntries(temp));
        }
    }

    private sealed class Callback(Action<ConversionProgress> report) : IProgress<ConversionProgress>
    {
        public void Report(ConversionProgress value) => report(value);
    }

    [Fact]
    public void ConfigsThatDoNotFitAreRefusedNamingTheMismatch()
    {
        // Without --config the tiny model would be given SD 1.5's architecture (models/configs/sd15).
        var e = Assert.Throws<UserInputException>(() => ModelConverter.Convert(TinyLdm, Path.Combine(temp, "tiny")));
        Assert.Contains("unet conv_in width is 32 in the file, 320 in the config", e.Message);
        Assert.Contains("config_directory", e.Message);  // the field; the CLI says --config
        Assert.Empty(Directory.GetFileSystemEntries(temp));
    }

    [Fact]
    public void AMissingTokenizerIsAWarningNotAFailure()
    {
        // The configs without a tokenizer, and no models/tokenizers anywhere the loader looks: the folder is written all the same.
        var configs = Path.Combine(temp, "configs");
        foreach (var component in new[] { "unet", "vae", "text_encoder", "scheduler" })
            CopyFolder(Path.Combine(TinyFolder, component), Path.Combine(configs, component));

        var result = ModelConverter.Convert(TinyLdm, Path.Combine(temp, "out"), new ConversionOptions(ConfigDirectory: configs, SearchRoots: [temp]));

        Assert.Contains(result.Warnings, w => w.StartsWith("the folder has no tokenizer/", StringComparison.Ordinal) && w.Contains("vocab.json"));
        Assert.True(File.Exists(Path.Combine(temp, "out", "unet", "config.json")));
    }

    [Fact]
    public void BadRequestsAreRefusedBeforeAnyWork()
    {
        Assert.Throws<UserInputException>(() => ModelConverter.Convert(Path.Combine(temp, "missing.safetensors"), Path.Combine(temp, "out")));
        Assert.Contains("the input", Assert.Throws<UserInputException>(() => ModelConverter.Convert(TinyLdm, TinyLdm)).Message);
        Assert.Contains(".ckpt", Assert.Throws<UserInputException>(() =>
            ModelConverter.Convert(TinyFolder, Path.Combine(temp, "x.safetensors"), new ConversionOptions(To: ModelFormat.Ckpt))).Message);
        Assert.Contains("single file", Assert.Throws<UserInputException>(() =>
            ModelConverter.Convert(TinyFolder, Path.Combine(temp, "x.ckpt"), new ConversionOptions(To: ModelFormat.Diffusers))).Message);
        var other = Path.Combine(temp, "other.safetensors");
        SafetensorsFile.Write(other, [new SafetensorsTensor("classifier.weight", SafetensorsDType.F32, [2], new byte[8])]);
        Assert.Contains("not a Stable Diffusion", Assert.Throws<UserInputException>(() => ModelConverter.Convert(other, Path.Combine(temp, "out"))).Message);
        Assert.Equal(["other.safetensors"], Directory.GetFileSystemEntries(temp).Select(Path.GetFileName));
    }

    [Fact]
    public void SdxlShapedFilesGetBothEncodersAndTokenizersAndConvertBack()
    {
        // The tiny model dressed as SDXL: its CLIP under SDXL's first-encoder prefix plus a 2-layer OpenCLIP tower
        // (width 32) under the second's, the layout where q/k/v are one in_proj and the projection is transposed.
        var random = new Random(7);
        byte[] Floats(params long[] shape) =>
            MemoryMarshal.AsBytes(Enumerable.Range(0, (int)shape.Aggregate(1L, (a, b) => a * b)).Select(_ => (float)random.NextDouble() - 0.5f).ToArray().AsSpan()).ToArray();
        var tensors = new List<SafetensorsTensor>();
        using (var tiny = SafetensorsFile.Open(TinyLdm))
            foreach (var e in tiny.Tensors)
                tensors.Add(new SafetensorsTensor(e.Name.Replace("cond_stage_model.transformer.", "conditioner.embedders.0.transformer."), e.DType, e.Shape, tiny.ReadBytes(e)));
        const string G = "conditioner.embedders.1.model.";
        void Add(string name, params long[] shape) => tensors.Add(new SafetensorsTensor(G + name, SafetensorsDType.F32, shape, Floats(shape)));
        Add("token_embedding.weight", 914, 32);
        Add("positional_embedding", 77, 32);
        for (var layer = 0; layer < 2; layer++)
        {
            var r = $"transformer.resblocks.{layer}.";
            foreach (var ln in new[] { "ln_1", "ln_2" })
            {
                Add($"{r}{ln}.weight", 32);
                Add($"{r}{ln}.bias", 32);
            }
            Add(r + "attn.in_proj_weight", 96, 32);
            Add(r + "attn.in_proj_bias", 96);
            Add(r + "attn.out_proj.weight", 32, 32);
            Add(r + "attn.out_proj.bias", 32);
            Add(r + "mlp.c_fc.weight", 64, 32);
            Add(r + "mlp.c_fc.bias", 64);
            Add(r + "mlp.c_proj.weight", 32, 64);
            Add(r + "mlp.c_proj.bias", 32);
        }
        Add("ln_final.weight", 32);
        Add("ln_final.bias", 32);
        Add("text_projection", 32, 32);
        Add("logit_scale");  // training-only, dropped
        var input = Path.Combine(temp, "xl.safetensors");
        SafetensorsFile.Write(input, tensors);

        var configs = Path.Combine(temp, "configs");
        foreach (var component in new[] { "unet", "vae", "text_encoder", "scheduler", "tokenizer" })
            CopyFolder(Path.Combine(TinyFolder, component), Path.Combine(configs, component));
        CopyFolder(Path.Combine(TinyFolder, "tokenizer"), Path.Combine(configs, "tokenizer_2"));
        var te2 = ReadJson(TinyFolder, "text_encoder", "config.json").AsObject();
        te2["num_hidden_layers"] = 2;
        te2["hidden_act"] = "gelu";
        te2["architectures"] = new JsonArray("CLIPTextModelWithProjection");
        Directory.CreateDirectory(Path.Combine(configs, "text_encoder_2"));
        File.WriteAllText(Path.Combine(configs, "text_encoder_2", "config.json"), te2.ToJsonString());

        var folder = Path.Combine(temp, "xl");
        var result = ModelConverter.Convert(input, folder, new ConversionOptions(ConfigDirectory: configs));
        Assert.Equal(ModelFamily.XlBase, result.Family);
        Assert.Equal(600 + 37, result.TensorCount);  // 2 x 16 per layer, embeddings, final norm, projection; no logit_scale

        var index = ReadJson(folder, "model_index.json");
        Assert.Equal("StableDiffusionXLPipeline", index["_class_name"]!.GetValue<string>());
        Assert.Equal("""["transformers","CLIPTextModelWithProjection"]""", index["text_encoder_2"]!.ToJsonString());
        Assert.Equal("""["transformers","CLIPTokenizer"]""", index["tokenizer_2"]!.ToJsonString());
        Assert.True(index["force_zeros_for_empty_prompt"]!.GetValue<bool>());
        Assert.Null(index["safety_checker"]);
        // SDXL's second tokenizer pads with "!"; the first keeps its own padding.
        Assert.Equal("!", ReadJson(folder, "tokenizer_2", "special_tokens_map.json")["pad_token"]!.GetValue<string>());
        Assert.Equal(File.ReadAllBytes(Path.Combine(TinyFolder, "tokenizer", "special_tokens_map.json")), File.ReadAllBytes(Path.Combine(folder, "tokenizer", "special_tokens_map.json")));

        using (var original = SafetensorsFile.Open(input))
        using (var encoder2 = SafetensorsFile.Open(WeightsOf(folder, "text_encoder_2")))
        {
            var inProj = original.GetSpan(G + "transformer.resblocks.1.attn.in_proj_weight");
            Assert.True(encoder2.GetSpan("text_model.encoder.layers.1.self_attn.k_proj.weight").SequenceEqual(inProj.Slice(32 * 32 * 4, 32 * 32 * 4)));
            var projection = MemoryMarshal.Cast<byte, float>(original.GetSpan(G + "text_projection"));
            var weight = MemoryMarshal.Cast<byte, float>(encoder2.GetSpan("text_projection.weight"));
            Assert.Equal(projection[(3 * 32) + 5], weight[(5 * 32) + 3]);  // x @ text_projection is Linear with the transpose
        }

        // The folder is complete enough for our loader: both encoders filled strictly, both tokenizers found.
        using (var model = ModelLoader.Load(folder))
        {
            Assert.True(model.IsSdxl);
            Assert.Equal(2, model.TextEncoder2!.Config.NumHiddenLayers);
        }

        var back = Path.Combine(temp, "back.safetensors");
        ModelConverter.Convert(folder, back);
        var expected = Path.Combine(temp, "expected.safetensors");
        SafetensorsFile.Write(expected, tensors.Where(t => t.Name != G + "logit_scale"));
        Assert.Equal(File.ReadAllBytes(expected), File.ReadAllBytes(back));
    }

    private static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var file in Directory.GetFiles(from)) File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
    }

    [Theory]
    [InlineData("model.safetensors", ModelFormat.Safetensors)]
    [InlineData("model.CKPT", ModelFormat.Ckpt)]
    [InlineData("model.pt", ModelFormat.Ckpt)]
    [InlineData("models/tiny", ModelFormat.Diffusers)]
    [InlineData("models/tiny/", ModelFormat.Diffusers)]
    public void TheFormatFollowsTheExtension(string output, ModelFormat expected) => Assert.Equal(expected, ModelConverter.FormatFor(output));
}
