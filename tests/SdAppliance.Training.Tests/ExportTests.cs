using System.Text.Json.Nodes;
using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Formats.Pickle;
using SdAppliance.Models.Conversion;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;
using SdAppliance.Training.Exports;
using static SdAppliance.Training.Tests.LoraTestSupport;

namespace SdAppliance.Training.Tests;

/// <summary>
/// Whole-model exports of the tiny model: the single file equals the reference conversion of the
/// fixture set byte for byte, and both the single file and the diffusers folder load back through
/// ModelLoader and generate the image the model generates.
/// </summary>
[Collection(TinySdxlCollection.Name)]
public sealed class ExportTests : IDisposable
{
    private readonly string folder = Directory.CreateTempSubdirectory("sdapp-export-").FullName;
    private readonly StableDiffusionModel model = LoadTiny();

    public void Dispose()
    {
        model.Dispose();
        Directory.Delete(folder, recursive: true);
    }

    [Fact]
    public void SingleFileEqualsTheReferenceConversionAndGeneratesTheSameImage()
    {
        var target = Path.Combine(folder, "single");
        Directory.CreateDirectory(target);
        var file = Path.Combine(target, "tiny.safetensors");
        ModelExport.SaveSingleFile(model, file, half: false);

        // The fixture is diffusers' own conversion of the same weights to the original layout.
        using (var ours = SafetensorsFile.Open(file))
        using (var reference = SafetensorsFile.Open(Fixture("tiny-sd.ldm.safetensors")))
        {
            Assert.Equal(reference.Names.Order(StringComparer.Ordinal), ours.Names.Order(StringComparer.Ordinal));
            foreach (var entry in reference.Tensors)
            {
                var mine = ours[entry.Name];
                Assert.Equal(entry.Shape, mine.Shape);
                Assert.True(reference.GetSpan(entry).SequenceEqual(ours.GetSpan(mine)), entry.Name);
            }
        }

        // A single file carries no tokenizer: it sits next to it, as ModelLoader looks for it.
        CopyFolder(Path.Combine(TinySd, "tokenizer"), Path.Combine(target, "tokenizer"));
        using var loaded = ModelLoader.Load(file, new ModelLoadOptions(ConfigDirectory: TinySd));
        Assert.Equal(Generate(model), Generate(loaded));
    }

    [Fact]
    public void HalfSingleFileHoldsFloat16OfEveryWeight()
    {
        var file = Path.Combine(folder, "half.safetensors");
        ModelExport.SaveSingleFile(model, file, half: true);
        using var st = SafetensorsFile.Open(file);
        Assert.Equal(600, st.Tensors.Count);
        Assert.All(st.Tensors, t => Assert.Equal(SafetensorsDType.F16, t.DType));
        using var state = model.Unet.StateDict();
        using var expected = state["conv_in.weight"].To(DType.Float16);
        Assert.True(expected.ToBytes().AsSpan().SequenceEqual(st.GetSpan(st["model.diffusion_model.input_blocks.0.0.weight"])));
    }

    [Fact]
    public void DiffusersFolderLoadsBackAndGeneratesTheSameImage()
    {
        var target = Path.Combine(folder, "diffusers");
        ModelExport.SaveDiffusersFolder(model, target, half: false);
        foreach (var part in new[] { "model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
                     "text_encoder/config.json", "text_encoder/model.safetensors", "tokenizer/vocab.json", "scheduler/scheduler_config.json" })
            Assert.True(File.Exists(Path.Combine(target, part)), part);
        Assert.Contains("\"_class_name\": \"UNet2DConditionModel\"", File.ReadAllText(Path.Combine(target, "unet", "config.json")));
        // The converter's writer wrote it: model_index.json is what diffusers wrote for the fixture, but for the version.
        var expectedIndex = JsonNode.Parse(File.ReadAllText(Path.Combine(TinySd, "model_index.json")))!.AsObject();
        expectedIndex["_diffusers_version"] = ModelWriter.DiffusersVersion;
        Assert.True(JsonNode.DeepEquals(expectedIndex, JsonNode.Parse(File.ReadAllText(Path.Combine(target, "model_index.json")))));

        using var loaded = ModelLoader.Load(target);
        Assert.Equal(model.Family, loaded.Family);
        Assert.Equal(model.PredictionType, loaded.PredictionType);
        Assert.Equal(Generate(model), Generate(loaded));

        // float16 weights load back (as float32) into nearly the same image: half-precision weights move
        // the 4-step result by a few levels at most.
        var half = Path.Combine(folder, "half");
        ModelExport.SaveDiffusersFolder(model, half, half: true);
        using (var st = SafetensorsFile.Open(Path.Combine(half, "unet", "diffusion_pytorch_model.safetensors")))
            Assert.All(st.Tensors, t => Assert.Equal(SafetensorsDType.F16, t.DType));
        using var loadedHalf = ModelLoader.Load(half);
        Assert.InRange(MaxPixelDifference(Generate(model), Generate(loadedHalf)), 0, 8);
    }

    [Fact]
    public void SdxlExportsLoadBackAndGenerateTheSameImage()
    {
        var source = Path.Combine(folder, "sdxl");
        WriteTinySdxl(source);
        using var xl = ModelLoader.Load(source);
        var expected = Generate(xl);

        var single = Path.Combine(folder, "single-xl");
        Directory.CreateDirectory(single);
        var file = Path.Combine(single, "xl.safetensors");
        ModelExport.SaveSingleFile(xl, file, half: false);
        using (var st = SafetensorsFile.Open(file))
        {
            // SDXL's layout: both encoders under conditioner.embedders, bigG's attention fused into in_proj.
            Assert.Contains(st.Names, n => n.StartsWith("conditioner.embedders.0.transformer.text_model.", StringComparison.Ordinal));
            Assert.Contains("conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight", st.Names);
            Assert.Contains("model.diffusion_model.label_emb.0.0.weight", st.Names);
        }
        CopyFolder(Path.Combine(source, "tokenizer"), Path.Combine(single, "tokenizer"));
        CopyFolder(Path.Combine(source, "tokenizer_2"), Path.Combine(single, "tokenizer_2"));
        using (var loaded = ModelLoader.Load(file, new ModelLoadOptions(ConfigDirectory: source)))
        {
            Assert.True(loaded.IsSdxl);
            Assert.Equal(expected, Generate(loaded));
        }

        var diffusers = Path.Combine(folder, "diffusers-xl");
        ModelExport.SaveDiffusersFolder(xl, diffusers, half: false);
        Assert.True(File.Exists(Path.Combine(diffusers, "tokenizer_2", "merges.txt")));
        Assert.Contains("CLIPTextModelWithProjection", File.ReadAllText(Path.Combine(diffusers, "text_encoder_2", "config.json")));
        using (var loaded = ModelLoader.Load(diffusers))
            Assert.Equal(expected, Generate(loaded));
    }

    [Fact]
    public void TorchSaveWriterRoundTripsAnObjectTree()
    {
        var inner = new PickleDict(isOrdered: true);
        inner.Set("w", new SafetensorsTensor("w", SafetensorsDType.F16, [2, 3], new byte[12]));
        var root = new PickleDict();
        root.Set(768L, new PickleTuple(inner, inner, null, true, 1.5, -70000L, 1L << 40, "é"));
        root.Set("list", Enumerable.Range(0, 1500).Select(i => (object?)(long)i).ToList());
        var file = Path.Combine(folder, "tree.pt");
        TorchSaveWriter.Write(file, root);

        using var checkpoint = TorchCheckpoint.Open(file);
        var back = Assert.IsType<PickleDict>(checkpoint.Root);
        var tuple = Assert.IsType<PickleTuple>(back[768L]);
        Assert.Equal(8, tuple.Count);
        var w = Assert.IsType<TorchTensor>(Assert.IsType<PickleDict>(tuple[0])["w"]);
        Assert.Equal((SafetensorsDType.F16, 2L, 3L), (w.DType, w.Shape[0], w.Shape[1]));
        Assert.Equal(new object?[] { null, true, 1.5, -70000L, 1L << 40, "é" }, tuple.Skip(2).ToArray());
        Assert.Equal(Enumerable.Range(0, 1500).Select(i => (object?)(long)i), Assert.IsType<List<object?>>(back["list"]));
        Assert.Empty(Directory.GetFiles(folder, "*.tmp"));
        Assert.Throws<ArgumentException>(() => TorchSaveWriter.Write(file, new object()));
    }
}
