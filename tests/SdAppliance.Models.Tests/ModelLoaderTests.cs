using SdAppliance.Formats.Checkpoints;
using SdAppliance.Formats.Pickle;
using SdAppliance.Formats;
using SdAppliance.Models.Loading;
using SdAppliance.Models.Tokenization;
using SdAppliance.Torch.Nn;
using SdAppliance.Torch.Serialization;
using SdAppliance.Torch;

namespace SdAppliance.Models.Tests;

public sealed class ModelLoaderTests : IDisposable
{
    private static readonly string Fixtures = Path.Combine(AppContext.BaseDirectory, "Fixtures");
    private static readonly string TinyFolder = Path.Combine(Fixtures, "tiny-sd");
    private static readonly string TinyLdm = Path.Combine(Fixtures, "tiny-sd.ldm.safetensors");
    private readonly string temp = Directory.CreateTempSubdirectory("sdapp-load-").FullName;

    public void Dispose() => Directory.Delete(temp, recursive: true);

    private static void AssertSameWeights(Module module, string file)
    {
        using var expected = TensorFile.Open(file);
        using var actual = module.StateDict();
        Assert.Equal(expected.Names.Order(StringComparer.Ordinal), actual.Keys.Order(StringComparer.Ordinal));
        foreach (var (name, tensor) in actual)
        {
            using var e = expected.ReadTensor(name);
            Assert.True(e.ToBytes().AsSpan().SequenceEqual(tensor.ToBytes()), $"{name} differs");
        }
    }

    [Fact]
    public void DiffusersFolderLoadsEveryComponentExactly()
    {
        using var model = ModelLoader.Load(TinyFolder);
        Assert.Equal(ModelFamily.V1, model.Family);
        Assert.False(model.IsSdxl);
        Assert.Equal("tiny-sd", model.Name);
        Assert.Equal("epsilon", model.PredictionType);
        Assert.Equal("PNDMScheduler", model.SchedulerConfig["_class_name"]!.GetValue<string>());
        Assert.Equal(64, model.DefaultResolution);  // sample_size 8 × VAE factor 8
        Assert.Equal(913, model.Tokenizer.PadId);
        AssertSameWeights(model.Unet, Path.Combine(TinyFolder, "unet", "diffusion_pytorch_model.safetensors"));
        AssertSameWeights(model.Vae, Path.Combine(TinyFolder, "vae", "diffusion_pytorch_model.safetensors"));
        AssertSameWeights(model.TextEncoder, Path.Combine(TinyFolder, "text_encoder", "model.safetensors"));
        Assert.False(model.Unet.IsTraining);
    }

    [Fact]
    public void DescribeTellsTheFamilyAndPredictionLoadFindsWithoutLoadingWeights()
    {
        using (var model = ModelLoader.Load(TinyFolder))
            Assert.Equal(new ModelDescription(model.Family, model.PredictionType), ModelLoader.Describe(TinyFolder));
        var file = Path.Combine(temp, "tiny.safetensors");
        File.Copy(TinyLdm, file);
        CopyFolder(Path.Combine(TinyFolder, "tokenizer"), Path.Combine(temp, "tokenizer"));
        using (var model = ModelLoader.Load(file, new ModelLoadOptions(ConfigDirectory: TinyFolder)))
            Assert.Equal(new ModelDescription(model.Family, model.PredictionType), ModelLoader.Describe(file));
        // A1111's companion .yaml decides, as it does for Load.
        File.WriteAllText(Path.ChangeExtension(file, ".yaml"), "model:\n  params:\n    parameterization: \"v\"\n");
        Assert.Equal("v_prediction", ModelLoader.Describe(file).PredictionType);
        Assert.Throws<UserInputException>(() => ModelLoader.Describe(Path.Combine(temp, "missing.safetensors")));
    }

    [Fact]
    public void SingleFileWithItsConfigLoadsTheSameWeightsAsTheFolder()
    {
        // The tokenizer of a single file is looked for next to it: give it the fixture's.
        var file = Path.Combine(temp, "tiny.safetensors");
        File.Copy(TinyLdm, file);
        CopyFolder(Path.Combine(TinyFolder, "tokenizer"), Path.Combine(temp, "tokenizer"));
        using var model = ModelLoader.Load(file, new ModelLoadOptions(ConfigDirectory: TinyFolder));
        Assert.Equal(ModelFamily.V1, model.Family);
        Assert.Equal("tiny", model.Name);
        AssertSameWeights(model.Unet, Path.Combine(TinyFolder, "unet", "diffusion_pytorch_model.safetensors"));
        AssertSameWeights(model.Vae, Path.Combine(TinyFolder, "vae", "diffusion_pytorch_model.safetensors"));
        AssertSameWeights(model.TextEncoder, Path.Combine(TinyFolder, "text_encoder", "model.safetensors"));
    }

    [Fact]
    public void SdxlSingleFileWithItsConfigLoadsTheSameWeightsAsTheFolder()
    {
        // diffusers' own convert_diffusers_to_original_sdxl.py wrote the file from tiny-sdxl/ (OpenCLIP names, fused
        // in_proj, transposed text_projection, label_emb); the folder's configs and tokenizers describe it.
        var tinySdxl = Path.Combine(Fixtures, "tiny-sdxl");
        var file = Path.Combine(Fixtures, "sdxl", "tiny-sdxl.ldm.safetensors");
        var options = new ModelLoadOptions(ConfigDirectory: tinySdxl);
        Assert.Equal(new ModelDescription(ModelFamily.XlBase, "epsilon"), ModelLoader.Describe(file, options));
        using var model = ModelLoader.Load(file, options);
        Assert.True(model.IsSdxl);
        Assert.Equal(ModelFamily.XlBase, model.Family);
        Assert.Equal("tiny-sdxl.ldm", model.Name);
        Assert.Equal((913, 0), (model.Tokenizer.PadId, model.Tokenizer2!.PadId));
        AssertSameWeights(model.Unet, Path.Combine(tinySdxl, "unet", "diffusion_pytorch_model.safetensors"));
        AssertSameWeights(model.Vae, Path.Combine(tinySdxl, "vae", "diffusion_pytorch_model.safetensors"));
        AssertSameWeights(model.TextEncoder, Path.Combine(tinySdxl, "text_encoder", "model.safetensors"));
        AssertSameWeights(model.TextEncoder2!, Path.Combine(tinySdxl, "text_encoder_2", "model.safetensors"));
    }

    [Fact]
    public void CkptThroughTheSafeUnpicklerLoadsTheSameWeights()
    {
        var ckpt = Path.Combine(temp, "tiny.ckpt");
        using (var source = SafetensorsFile.Open(TinyLdm))
            TorchCheckpointWriter.Write(ckpt, source.Tensors.Select(e => new SafetensorsTensor(e.Name, e.DType, e.Shape, source.ReadBytes(e))).ToList());
        CopyFolder(Path.Combine(TinyFolder, "tokenizer"), Path.Combine(temp, "tokenizer"));
        using var model = ModelLoader.Load(ckpt, new ModelLoadOptions(ConfigDirectory: TinyFolder));
        AssertSameWeights(model.Unet, Path.Combine(TinyFolder, "unet", "diffusion_pytorch_model.safetensors"));
        AssertSameWeights(model.TextEncoder, Path.Combine(TinyFolder, "text_encoder", "model.safetensors"));
    }

    [Fact]
    public void SingleFileThatDoesNotFitTheStandardArchitectureSaysToPassConfig()
    {
        var e = Assert.Throws<UserInputException>(() => ModelLoader.Load(TinyLdm));
        Assert.Contains("tiny-sd.ldm.safetensors", e.Message);
        Assert.Contains("config_directory", e.Message);  // the field; the CLI says --config
    }

    [Fact]
    public void HostileCheckpointIsRefusedNamingTheGlobal()
    {
        var marker = Path.Combine(Directory.GetCurrentDirectory(), "sdappliance-hostile-pickle-ran");
        var e = Assert.Throws<UnsafePickleException>(() => ModelLoader.Load(Path.Combine(Fixtures, "pickle", "hostile.ckpt")));
        Assert.Contains("system", e.Message);
        Assert.False(File.Exists(marker));
    }

    [Fact]
    public void UnknownFilesAreRefusedClearly()
    {
        var notModel = Path.Combine(temp, "notes.txt");
        File.WriteAllText(notModel, "hello");
        Assert.Contains(".txt", Assert.Throws<UserInputException>(() => ModelLoader.Load(notModel)).Message);
        var truncated = Path.Combine(temp, "cut.safetensors");
        File.WriteAllBytes(truncated, File.ReadAllBytes(TinyLdm).AsSpan(0, 1000).ToArray());
        Assert.Contains("cut.safetensors", Assert.Throws<SafetensorsFormatException>(() => ModelLoader.Load(truncated)).Message);
        Assert.Throws<UserInputException>(() => ModelLoader.Load(Path.Combine(temp, "missing.safetensors")));
        var unrelated = Path.Combine(temp, "other.safetensors");
        SafetensorsFile.Write(unrelated, [new SafetensorsTensor("classifier.weight", SafetensorsDType.F32, [2], new byte[8])]);
        Assert.Contains("not a Stable Diffusion", Assert.Throws<UserInputException>(() => ModelLoader.Load(unrelated)).Message);
    }

    [Fact]
    public void MissingTokenizerSaysWhichFilesToPutWhere()
    {
        var file = Path.Combine(temp, "tiny.safetensors");
        File.Copy(TinyLdm, file);
        // The configs without their tokenizer: a --config folder that has one lends it (next test).
        var configs = Path.Combine(temp, "configs");
        foreach (var component in new[] { "unet", "vae", "text_encoder", "scheduler" })
            CopyFolder(Path.Combine(TinyFolder, component), Path.Combine(configs, component));
        var e = Assert.Throws<UserInputException>(() => ModelLoader.Load(file, new ModelLoadOptions(ConfigDirectory: configs, SearchRoots: [temp])));
        Assert.Contains("vocab.json", e.Message);
        Assert.Contains(Path.Combine(temp, "models", "tokenizers", "clip"), e.Message);
    }

    [Fact]
    public void SingleFileTakesTheTokenizerOfItsConfigFolder()
    {
        // As diffusers' from_single_file(config=...): the config folder is a whole model, tokenizer included.
        var file = Path.Combine(temp, "tiny.safetensors");
        File.Copy(TinyLdm, file);
        using var model = ModelLoader.Load(file, new ModelLoadOptions(ConfigDirectory: TinyFolder, SearchRoots: [temp]));
        Assert.Equal(913, model.Tokenizer.PadId);
        Assert.Equal(model.Tokenizer.Encode("a red circle"), ClipTokenizer.FromFolder(Path.Combine(TinyFolder, "tokenizer")).Encode("a red circle"));
    }

    private static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
    }
}
