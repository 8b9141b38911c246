using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;
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
        Path.Combine(folder, component, component == "text_encoder" ? "model.safetensors" : "diffusion_pytorch_model.safetensors");

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
            using var t = Torch.Torch.FromBytes(reference.GetSpan(entry), [.. entry.Shape], DType.Float32);
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
        SafetensorsWriter.Write(input,
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
        using var t = Torch.Torch.FromBytes(bf16, [values.Length], DType.BFloat16);
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
        var e = Assert.Throws<IOException>(() => ModelConverter.Convert(TinyLdm, documents, new ConversionOptions(ConfigDirectory: TinyFolder)));
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
        var e = Assert.Throws<InvalidDataException>(() => ModelConverter.Convert(TinyLdm, Path.Combine(temp, "tiny")));
        Assert.Contains("unet conv_in width is 32 in the file, 320 in the config", e.Message);
        Assert.Contains("--config", e.Message);
        Assert.Empty(Directory.GetFileSystemEntries(temp));
    }

    [Fact]
    public void BadRequestsAreRefusedBeforeAnyWork()
    {
        Assert.Throws<FileNotFoundException>(() => ModelConverter.Convert(Path.Combine(temp, "missing.safetensors"), Path.Combine(temp, "out")));
        Assert.Contains("the input", Assert.Throws<ArgumentException>(() => ModelConverter.Convert(TinyLdm, TinyLdm)).Message);
        Assert.Contains(".ckpt", Assert.Throws<ArgumentException>(() =>
            ModelConverter.Convert(TinyFolder, Path.Combine(temp, "x.safetensors"), new ConversionOptions(To: ModelFormat.Ckpt))).Message);
        Assert.Contains("single file", Assert.Throws<ArgumentException>(() =>
            ModelConverter.Convert(TinyFolder, Path.Combine(temp, "x.ckpt"), new ConversionOptions(To: ModelFormat.Diffusers))).Message);
        var other = Path.Combine(temp, "other.safetensors");
        SafetensorsWriter.Write(other, [new SafetensorsTensor("classifier.weight", SafetensorsDType.F32, [2], new byte[8])]);
        Assert.Contains("not a Stable Diffusion", Assert.Throws<InvalidDataException>(() => ModelConverter.Convert(other, Path.Combine(temp, "out"))).Message);
        Assert.Equal(["other.safetensors"], Directory.GetFileSystemEntries(temp).Select(Path.GetFileName));
    }

    [Theory]
    [InlineData("model.safetensors", ModelFormat.Safetensors)]
    [InlineData("model.CKPT", ModelFormat.Ckpt)]
    [InlineData("model.pt", ModelFormat.Ckpt)]
    [InlineData("models/tiny", ModelFormat.Diffusers)]
    [InlineData("models/tiny/", ModelFormat.Diffusers)]
    public void TheFormatFollowsTheExtension(string output, ModelFormat expected) => Assert.Equal(expected, ModelConverter.FormatFor(output));
}
