using System.Buffers.Binary;
using SdAppliance.Imaging;
using SdAppliance.Models.Adapters;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;
using SdAppliance.Torch.Serialization;
using SdAppliance.Training.Data;
using SdAppliance.Training.Runs;

namespace SdAppliance.Training.Tests;

/// <summary>The trainer end to end on the tiny fixture model and a few synthetic 64x64 images.</summary>
[Collection(TrainingCollection.Name)]
public sealed class TrainerTests : IDisposable
{
    private static readonly string TinyModel = Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sd");
    private readonly string root = Directory.CreateTempSubdirectory("sdapp-train-").FullName;

    public void Dispose() => Directory.Delete(root, recursive: true);

    /// <summary>Red squares on blue, at a few positions, with a caption each.</summary>
    private string MakeDataset(int count = 4, string caption = "a red square on a blue background")
    {
        var folder = Path.Combine(root, "data");
        Directory.CreateDirectory(folder);
        for (var i = 0; i < count; i++)
        {
            var image = new RgbImage(64, 64, 3);
            for (var y = 0; y < 64; y++)
                for (var x = 0; x < 64; x++)
                {
                    var inside = x >= 8 + 4 * i && x < 40 + 4 * i && y >= 16 && y < 48;
                    var p = image.Pixel(x, y);
                    p[0] = inside ? (byte)255 : (byte)0;
                    p[1] = 0;
                    p[2] = inside ? (byte)0 : (byte)255;
                }
            ImageCodec.Save(image, Path.Combine(folder, $"img{i}.png"));
            File.WriteAllText(Path.Combine(folder, $"img{i}.txt"), caption);
        }
        return folder;
    }

    private TrainingConfig Config(string method, string run, int steps = 6) => new()
    {
        Method = method, Model = TinyModel, Data = MakeDataset(caption: method == "textual-inversion" ? "a zwx on a blue background" : "a red square on a blue background"), Output = Path.Combine(root, run), Resolution = 64,
        MaxTrainSteps = steps, LearningRate = method == "textual-inversion" ? 5e-3 : 1e-3, NetworkDim = 4, NetworkAlpha = 4,
        PlaceholderToken = "zwx", InitializerToken = "square", InstancePrompt = "a zwx", Seed = 7,
    };

    [Theory]
    [InlineData("lora")]
    [InlineData("dreambooth")]
    [InlineData("textual-inversion")]
    [InlineData("hypernetwork")]
    [InlineData("finetune")]
    public void ResumingFromACheckpointEndsBitIdenticalToAnUninterruptedRun(string method)
    {
        var straight = Trainer.Train(Config(method, "straight") with { SaveEveryNSteps = 100 });
        var interrupted = Config(method, "interrupted", steps: 3) with { SaveEveryNSteps = 100 };
        Trainer.Train(interrupted);
        var resumed = Trainer.Resume(interrupted.Output!, maxTrainSteps: 6);
        Assert.Equal(6, straight.Steps);
        Assert.Equal(6, resumed.Steps);
        // On CPU the engine is deterministic for these kernels: identical, not merely close.
        using var a = SafetensorsReader.Open(Path.Combine(straight.RunFolder, "checkpoints", "step-000006", "trained.safetensors"));
        using var b = SafetensorsReader.Open(Path.Combine(resumed.RunFolder, "checkpoints", "step-000006", "trained.safetensors"));
        Assert.Equal(a.Names, b.Names);
        foreach (var name in a.Names)
        {
            using var ta = a.Get(name);
            using var tb = b.Get(name);
            Assert.True(ta.ToBytes().AsSpan().SequenceEqual(tb.ToBytes()), $"{method}: {name} differs after resume");
        }
        Assert.NotEmpty(straight.Outputs);
        Assert.All(straight.Outputs, o => Assert.True(File.Exists(o) || Directory.Exists(o), o));
    }

    [Fact]
    public void LoraLowersTheDenoisingLossOfTheInstanceImagesAndExportsKohyaKeys()
    {
        var config = Config("lora", "lora", steps: 40) with { LearningRate = 3e-3 };
        var before = DenoisingLoss(config, lora: null);
        var report = Trainer.Train(config);
        var file = Assert.Single(report.Outputs);
        var after = DenoisingLoss(config, lora: file);
        Assert.True(after < before * 0.9, $"loss {before} before, {after} after training");
        using var lora = LoraFile.Load(file);
        Assert.Contains(lora.Modules, m => m.Name == "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q");
        Assert.Equal("4", lora.Metadata["ss_network_dim"]);
    }

    /// <summary>The mean MSE of the instance images over fixed noise and timesteps, with a LoRA file merged or not.</summary>
    private static double DenoisingLoss(TrainingConfig config, string? lora)
    {
        using var model = ModelLoader.Load(config.Model!);
        using var file = lora is null ? null : LoraFile.Load(lora);
        using var patch = file is null ? null : LoraPatch.Apply([new LoraApplication(file, 1.0)],
            new Dictionary<LoraTarget, Torch.Nn.Module> { [LoraTarget.Unet] = model.Unet, [LoraTarget.TextEncoder] = model.TextEncoder });
        using var inference = Autograd.InferenceMode();
        using var scope = Torch.Torch.NewDisposeScope();
        var dataset = TrainingDataset.Scan(new DatasetOptions { DataDir = config.Data, Resolution = 64 });
        using var cache = new LatentCache(model.Vae, "eval", onDisk: false);
        var conditioner = new Diffusion.Prompts.PromptConditioner(model, new Diffusion.Prompts.EmbeddingLibrary(model.Tokenizer));
        using var scheduler = Diffusion.Schedulers.SchedulerRegistry.FromConfig(Diffusion.Schedulers.SchedulerConfig.FromJson(model.SchedulerConfig.ToJsonString()));
        using var g = new Generator(99);
        var total = 0.0;
        var count = 0;
        foreach (var batch in dataset.Batches(0, 1, 1))
            foreach (var t in new long[] { 100, 400, 700 })
            {
                var latents = cache.Get(batch[0]);
                var noise = Torch.Torch.Randn(latents.Shape, g);
                var timesteps = Torch.Torch.Tensor([t]);
                var noisy = scheduler.AddNoise(latents, noise, timesteps);
                var text = conditioner.EncodeBatch([batch[0].Caption]);
                var prediction = model.Unet.Forward(noisy, timesteps, text.PromptEmbeds);
                total += Functional.MseLoss(prediction, noise).Item();
                count++;
            }
        return total / count;
    }

    [Fact]
    public void TextualInversionChangesOnlyItsVectors()
    {
        var report = Trainer.Train(Config("textual-inversion", "ti", steps: 5));
        Assert.Contains(report.Outputs, o => o.EndsWith("zwx.safetensors", StringComparison.Ordinal));
        Assert.Contains(report.Outputs, o => o.EndsWith("zwx.pt", StringComparison.Ordinal));
        Assert.Contains(report.Outputs, o => o.EndsWith("learned_embeds.safetensors", StringComparison.Ordinal));
        using var embedding = TextualInversionEmbedding.Load(report.Outputs.First(o => o.EndsWith("zwx.safetensors", StringComparison.Ordinal)));
        using var model = ModelLoader.Load(TinyModel);
        var squareId = Assert.Single(model.Tokenizer.Encode("square"));
        using var init = model.TextEncoder.TextModel.Embeddings.TokenEmbedding.Weight.Narrow(0, squareId, 1);
        Assert.False(init.ToBytes().AsSpan().SequenceEqual(embedding.Vectors.ToBytes()), "the vectors did not move from the initializer");
        // The model's own embedding matrix is the file's, bit for bit: the trainer never wrote to it.
        using var reference = SafetensorsReader.Open(Path.Combine(TinyModel, "text_encoder", "model.safetensors"));
        using var original = reference.Get("text_model.embeddings.token_embedding.weight");
        Assert.Equal(original.ToBytes(), model.TextEncoder.TextModel.Embeddings.TokenEmbedding.Weight.ToBytes());
    }

    [Fact]
    public void BadConfigsFailBeforeTrainingNamingTheField()
    {
        var good = Config("lora", "bad");
        Assert.Contains("method", Assert.Throws<TrainingConfigException>(() => Trainer.Train(good with { Method = "magic" })).Message);
        Assert.Contains("network_dim", Assert.Throws<TrainingConfigException>(() => Trainer.Train(good with { NetworkDim = 0 })).Message);
        Assert.Contains("class_data", Assert.Throws<TrainingConfigException>(() => Trainer.Train(good with { ClassPrompt = "a square" })).Message);
        Assert.Contains("placeholder_token", Assert.Throws<TrainingConfigException>(() => Trainer.Train(good with { Method = "textual-inversion", PlaceholderToken = null })).Message);
        var missing = Path.Combine(root, "nowhere");
        Assert.Contains("nowhere", Assert.Throws<DatasetException>(() => Trainer.Train(good with { Data = missing })).Message);
        var empty = Path.Combine(root, "empty");
        Directory.CreateDirectory(empty);
        Assert.Throws<DatasetException>(() => Trainer.Train(good with { Data = empty }));
        Assert.False(Directory.Exists(Path.Combine(good.Output!, "checkpoints")), "a failed start must not leave a run behind");
    }

    [Fact]
    public void TheRunFolderHasTheLogTensorBoardEventsCheckpointsSamplesAndReport()
    {
        var report = Trainer.Train(Config("lora", "watched", steps: 4) with { SaveEveryNSteps = 2, SaveLastK = 1, SampleEveryNSteps = 2, SampleSteps = 2 });
        var run = report.RunFolder;
        var lines = File.ReadAllLines(Path.Combine(run, "log.jsonl"));
        Assert.Equal(4, lines.Length);
        Assert.Contains("\"smoothed_loss\"", lines[0]);
        Assert.Equal(["step-000004"], Directory.GetDirectories(Path.Combine(run, "checkpoints")).Select(Path.GetFileName));
        Assert.Equal(3, report.Samples.Count);  // steps 2 and 4 during training, and the final one
        Assert.True(File.Exists(Path.Combine(run, "report.json")));

        // TFRecord framing with valid masked CRC-32C, and the scalars by tag.
        var events = File.ReadAllBytes(Assert.Single(Directory.GetFiles(Path.Combine(run, "tensorboard"))));
        var records = 0;
        for (var at = 0; at < events.Length; records++)
        {
            var length = (int)BinaryPrimitives.ReadUInt64LittleEndian(events.AsSpan(at));
            Assert.Equal(Crc32C.Masked(events.AsSpan(at, 8)), BinaryPrimitives.ReadUInt32LittleEndian(events.AsSpan(at + 8)));
            Assert.Equal(Crc32C.Masked(events.AsSpan(at + 12, length)), BinaryPrimitives.ReadUInt32LittleEndian(events.AsSpan(at + 12 + length)));
            at += 16 + length;
        }
        Assert.Equal(1 + 4 * 3, records);  // the version record, then loss, smoothed loss and lr per step
    }

    [Fact]
    public void Crc32CMatchesTheStandardCheckValue() =>
        Assert.Equal(0xE3069283u, Crc32C.Compute("123456789"u8));
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TrainingCollection
{
    public const string Name = "Training";
}
