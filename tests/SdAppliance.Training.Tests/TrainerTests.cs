using System.Buffers.Binary;
using SdAppliance.Formats.Adapters;
using SdAppliance.Formats;
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
    // Prodigy's estimate lives in the optimizer state's groups: a resume that lost it would restart from d0.
    [InlineData("lora", "Prodigy")]
    // 8-bit moments: codes and block maxima written and read back (the tiny UNet's larger weights are quantised).
    [InlineData("dreambooth", "AdamW8bit")]
    [InlineData("dreambooth", "Lion8bit")]
    public void ResumingFromACheckpointEndsBitIdenticalToAnUninterruptedRun(string method, string optimizer = "AdamW")
    {
        var resumed = AssertResumeIsBitIdentical(method, (run, steps) => Config(method, run, steps) with
        {
            SaveEveryNSteps = 100, Optimizer = optimizer, LearningRate = optimizer == "Prodigy" ? 1 : Config(method, run).LearningRate,
        });
        if (!optimizer.EndsWith("8bit", StringComparison.Ordinal)) return;
        // The state that resumed holds 8-bit codes with their block maxima, not float moments.
        using var state = TensorFile.Open(Path.Combine(resumed.RunFolder, "checkpoints", "step-000006", "optimizer.safetensors"));
        var codes = state.Names.First(n => n.EndsWith(".state1", StringComparison.Ordinal) && state.Names.Contains(n[..^".state1".Length] + ".absmax1"));
        using var t = state.ReadTensor(codes);
        Assert.Equal(DType.UInt8, t.DType);
    }

    [Fact]
    public void ResumingARunWithHuberLossInputPerturbationAndPyramidNoiseEndsBitIdentical() =>
        // Their extra draws (the perturbation, the pyramid's factors and layers) come from the run's saved generator.
        AssertResumeIsBitIdentical("lora", (run, steps) => Config("lora", run, steps) with
        {
            SaveEveryNSteps = 100, LossType = "huber", HuberSchedule = "snr", IpNoiseGamma = 0.1, MultiresNoiseIterations = 6, MultiresNoiseDiscount = 0.3,
            NoiseOffset = 0.05,
        });

    private TrainingReport AssertResumeIsBitIdentical(string method, Func<string, int, TrainingConfig> setup)
    {
        TrainingConfig Setup(string run, int steps = 6) => setup(run, steps);
        var straight = Trainer.Train(Setup("straight"));
        var interrupted = Setup("interrupted", steps: 3);
        Trainer.Train(interrupted);
        var resumed = Trainer.Resume(interrupted.Output!, maxTrainSteps: 6);
        Assert.Equal(6, straight.Steps);
        Assert.Equal(6, resumed.Steps);
        // On CPU the engine is deterministic for these kernels: identical, not merely close.
        using var a = TensorFile.Open(Path.Combine(straight.RunFolder, "checkpoints", "step-000006", "trained.safetensors"));
        using var b = TensorFile.Open(Path.Combine(resumed.RunFolder, "checkpoints", "step-000006", "trained.safetensors"));
        Assert.Equal(a.Names, b.Names);
        foreach (var name in a.Names)
        {
            using var ta = a.ReadTensor(name);
            using var tb = b.ReadTensor(name);
            Assert.True(ta.ToBytes().AsSpan().SequenceEqual(tb.ToBytes()), $"{method}: {name} differs after resume");
        }
        Assert.NotEmpty(straight.Outputs);
        Assert.All(straight.Outputs, o => Assert.True(File.Exists(o) || Directory.Exists(o), o));
        return resumed;
    }

    [Fact]
    public void WorkAtTheStepBoundaryThatChangesThreadsAndTheDefaultGeneratorLeavesTheRunAsIfNeverPaused()
    {
        // What the run sees at each boundary (thread count, default generator) with a boundary that does nothing...
        var quiet = new List<(int Threads, string Generator)>();
        var straight = Trainer.Train(Config("lora", "quiet", steps: 4), stepBoundary: () => quiet.Add(Observe()));
        // ...and with one that does what a generation does to the engine: other threads, draws from the default generator.
        var busy = new List<(int Threads, string Generator)>();
        var paused = Trainer.Train(Config("lora", "busy", steps: 4), stepBoundary: () =>
        {
            busy.Add(Observe());
            Engine.NumThreads = Engine.NumThreads == 1 ? 2 : 1;
            using var draw = torch.Randn([64]);
        });
        Assert.Equal(4, quiet.Count);
        Assert.Equal(quiet, busy);
        using var a = TensorFile.Open(Assert.Single(straight.Outputs));
        using var b = TensorFile.Open(Assert.Single(paused.Outputs));
        foreach (var name in a.Names)
            Assert.True(a.ReadBytes(name).AsSpan().SequenceEqual(b.ReadBytes(name)), $"{name} differs after the paused run");

        static (int, string) Observe()
        {
            using var cpuDefault = Generator.Default(Device.Cpu);
            return (Engine.NumThreads, Convert.ToBase64String(cpuDefault.GetStateBytes()));
        }
    }

    [Theory]
    [InlineData("lora", 3e-3)]
    [InlineData("dreambooth", 1e-3)]
    [InlineData("finetune", 1e-3)]
    [InlineData("textual-inversion", 0.3)]
    [InlineData("hypernetwork", 3e-3)]
    public void EachMethodLowersTheDenoisingLossOfTheInstanceImages(string method, double lr)
    {
        // finetune exports its EMA weights: a short decay lets 30 steps show in them.
        var config = Config(method, method, steps: 30) with { LearningRate = lr, EmaDecay = 0.5 };
        var before = DenoisingLoss(config, method, outputs: null);
        var report = Trainer.Train(config);
        var after = DenoisingLoss(config, method, report.Outputs);
        // Textual inversion moves only the conditioning, whose pull on a random tiny UNet is weak: it must
        // lower the loss, by less than the methods that change the UNet itself.
        Assert.True(after < before * (method == "textual-inversion" ? 0.999 : 0.9), $"{method}: loss {before} before, {after} after training");
        if (method == "lora")
        {
            using var lora = LoraFile.Load(Assert.Single(report.Outputs));
            Assert.Contains(lora.Modules, m => m.Name == "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q");
            Assert.Equal("4", lora.Metadata["ss_network_dim"]);
        }
    }

    /// <summary>The mean MSE of the instance images over fixed noise and timesteps, on the base model or with a run's results applied.</summary>
    private static double DenoisingLoss(TrainingConfig config, string method, IReadOnlyList<string>? outputs)
    {
        var modelPath = outputs is not null && method is "dreambooth" or "finetune" ? outputs.First(o => o.EndsWith(".safetensors", StringComparison.Ordinal)) : config.Model!;
        using var model = ModelLoader.Load(modelPath, new ModelLoadOptions(ConfigDirectory: modelPath == config.Model ? null : TinyModel));
        using var lora = outputs is not null && method == "lora" ? LoraFile.Load(outputs[0]) : null;
        using var patch = lora is null ? null : LoraPatch.Apply([new LoraApplication(lora, 1.0)],
            new Dictionary<LoraTarget, Torch.Nn.Module> { [LoraTarget.Unet] = model.Unet, [LoraTarget.TextEncoder] = model.TextEncoder });
        using var hypernetwork = outputs is not null && method == "hypernetwork" ? Hypernetwork.LoadPt(outputs[0], model) : null;
        hypernetwork?.Attach();
        using var embeddings = new Diffusion.Prompts.EmbeddingLibrary(model.Tokenizer);
        if (outputs is not null && method == "textual-inversion")
            embeddings.Add(TextualInversionEmbedding.Load(outputs.First(o => o.EndsWith("zwx.safetensors", StringComparison.Ordinal))));
        using var inference = Autograd.InferenceMode();
        using var scope = torch.NewDisposeScope();
        var dataset = TrainingDataset.Scan(new DatasetOptions { DataDir = config.Data, Resolution = 64 });
        using var cache = new LatentCache(model.Vae, "eval", onDisk: false);
        var conditioner = new Diffusion.Prompts.PromptConditioner(model, embeddings);
        using var scheduler = Diffusion.Schedulers.SchedulerRegistry.FromConfig(Diffusion.Schedulers.SchedulerConfig.FromJson(model.SchedulerConfig.ToJsonString()));
        using var g = new Generator(99);
        var total = 0.0;
        var count = 0;
        foreach (var batch in dataset.Batches(0, 1, 1))
            foreach (var t in new long[] { 100, 400, 700 })
            {
                var latents = cache.Get(batch[0]);
                var noise = torch.Randn(latents.Shape, g);
                var timesteps = torch.Tensor([t]);
                var noisy = scheduler.AddNoise(latents, noise, timesteps);
                // Before textual inversion the new word is its initializer (one vector, the same position).
                var caption = method == "textual-inversion" && outputs is null ? batch[0].Caption.Replace("zwx", "square") : batch[0].Caption;
                var text = conditioner.EncodeBatch([caption]);
                var prediction = model.Unet.Forward(noisy, timesteps, text.PromptEmbeds);
                total += Functional.MseLoss(prediction, noise).Item();
                count++;
            }
        return total / count;
    }

    [Fact]
    public void EachLossAndNoiseOptionChangesWhatTheRunTrains()
    {
        var plain = Config("lora", "l2", steps: 1);
        byte[] Trained(TrainingConfig config)
        {
            var report = Trainer.Train(config);
            using var file = TensorFile.Open(Assert.Single(report.Outputs));
            return [.. file.Names.Order(StringComparer.Ordinal).SelectMany(file.ReadBytes)];
        }
        var baseline = Trained(plain);
        Assert.Equal(baseline, Trained(plain with { Output = Path.Combine(root, "l2-again") }));
        var variants = new (string Name, TrainingConfig Config)[]
        {
            ("l1", plain with { LossType = "l1" }),
            ("huber", plain with { LossType = "huber" }),
            ("smooth_l1", plain with { LossType = "smooth_l1", HuberSchedule = "constant" }),
            ("ip_noise_gamma", plain with { IpNoiseGamma = 0.1 }),
            ("multires", plain with { MultiresNoiseIterations = 6 }),
        };
        foreach (var (name, config) in variants)
            Assert.False(baseline.AsSpan().SequenceEqual(Trained(config with { Output = Path.Combine(root, name) })), $"{name} trained the weights of l2");
    }

    [Fact]
    public void AWhiteMaskTrainsTheWeightsOfNoMaskAndAMissingMaskStopsTheRunBeforeItTrains()
    {
        var plain = Config("lora", "unmasked", steps: 2);
        var masks = Path.Combine(root, "masks");
        Directory.CreateDirectory(masks);
        var white = new RgbImage(64, 64, 3);
        white.Pixels.AsSpan().Fill(255);
        for (var i = 0; i < 4; i++) ImageCodec.Save(white, Path.Combine(masks, $"img{i}.{(i % 2 == 0 ? "png" : "jpg")}"));
        var unmasked = Trainer.Train(plain);
        var masked = Trainer.Train(plain with { Output = Path.Combine(root, "masked"), MaskedLoss = true, ConditioningDataDir = masks });
        using (var a = TensorFile.Open(Assert.Single(unmasked.Outputs)))
        using (var b = TensorFile.Open(Assert.Single(masked.Outputs)))
            foreach (var name in a.Names)
                Assert.True(a.ReadBytes(name).AsSpan().SequenceEqual(b.ReadBytes(name)), $"{name} differs with a mask of ones");
        // Black on the left half: the loss counts only the right half's pixels, so it differs.
        var half = new RgbImage(64, 64, 3);
        for (var y = 0; y < 64; y++)
            for (var x = 32; x < 64; x++) half.Pixel(x, y)[0] = 255;
        foreach (var file in Directory.GetFiles(masks)) File.Delete(file);
        for (var i = 0; i < 4; i++) ImageCodec.Save(half, Path.Combine(masks, $"img{i}.png"));
        var halved = Trainer.Train(plain with { Output = Path.Combine(root, "halved"), MaskedLoss = true, ConditioningDataDir = masks });
        Assert.True(double.IsFinite(halved.FinalSmoothedLoss));
        Assert.NotEqual(unmasked.FinalSmoothedLoss, halved.FinalSmoothedLoss);
        // alpha_mask alone masks the loss too (these images are opaque: they weigh 1, so the weights are those of no mask).
        var alpha = Trainer.Train(plain with { Output = Path.Combine(root, "alpha"), AlphaMask = true });
        Assert.Equal(unmasked.FinalSmoothedLoss, alpha.FinalSmoothedLoss);

        File.Delete(Path.Combine(masks, "img3.png"));
        var error = Assert.Throws<TrainingConfigException>(() => Trainer.Train(plain with { Output = Path.Combine(root, "missing"), MaskedLoss = true, ConditioningDataDir = masks }));
        Assert.Equal("conditioning_data_dir", error.Subject);
        Assert.Contains("img3.png", error.Message);
        Assert.False(Directory.Exists(Path.Combine(root, "missing", "checkpoints")));
    }

    [Fact]
    public void ZeroTerminalSnrAndTheVPredictionScaleTrainAVPredictionModelAndRefuseAnEpsilonOne()
    {
        var vModel = Path.Combine(root, "tiny-sd-v");
        CopyFolder(TinyModel, vModel);
        var schedulerFile = Path.Combine(vModel, "scheduler", "scheduler_config.json");
        File.WriteAllText(schedulerFile, File.ReadAllText(schedulerFile).Replace("\"epsilon\"", "\"v_prediction\"", StringComparison.Ordinal));
        var config = Config("lora", "vpred", steps: 3) with
        {
            Model = vModel, ZeroTerminalSnr = true, ScaleVPredLossLikeNoisePred = true, MinSnrGamma = 5, LossType = "smooth_l1", HuberSchedule = "exponential",
        };
        var report = Trainer.Train(config);
        Assert.Equal(3, report.Steps);
        Assert.True(double.IsFinite(report.FinalSmoothedLoss), $"loss {report.FinalSmoothedLoss}");

        var epsilon = config with { Model = TinyModel, Output = Path.Combine(root, "eps1"), ScaleVPredLossLikeNoisePred = false };
        Assert.StartsWith("zero_terminal_snr: ", Assert.Throws<TrainingConfigException>(() => Trainer.Train(epsilon)).Message);
        Assert.StartsWith("scale_v_pred_loss_like_noise_pred: ",
            Assert.Throws<TrainingConfigException>(() => Trainer.Train(epsilon with { Output = Path.Combine(root, "eps2"), ZeroTerminalSnr = false, ScaleVPredLossLikeNoisePred = true })).Message);

        static void CopyFolder(string from, string to)
        {
            Directory.CreateDirectory(to);
            foreach (var file in Directory.GetFiles(from)) File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
            foreach (var dir in Directory.GetDirectories(from)) CopyFolder(dir, Path.Combine(to, Path.GetFileName(dir)));
        }
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
        using var reference = TensorFile.Open(Path.Combine(TinyModel, "text_encoder", "model.safetensors"));
        using var original = reference.ReadTensor("text_model.embeddings.token_embedding.weight");
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
    public void PriorPreservationGeneratesTheMissingClassImagesFirst()
    {
        var classDir = Path.Combine(root, "class");
        var config = Config("dreambooth", "prior", steps: 2) with
        {
            ClassPrompt = "a square", ClassData = classDir, NumClassImages = 2, SampleSteps = 2, TrainBatchSize = 1,
        };
        var report = Trainer.Train(config);
        var generated = Directory.GetFiles(classDir, "class-*.png").Order(StringComparer.Ordinal).ToList();
        Assert.Equal(2, generated.Count);
        var parameters = A1111Parameters.Parse(ImageCodec.Load(generated[0]).Text["parameters"]);
        Assert.Equal("a square", parameters.Prompt);
        Assert.Single(Directory.GetFiles(classDir, "class_images-*.json"));
        Assert.Equal(2, report.Steps);
        // A second run finds them and generates nothing more.
        Trainer.Train(config with { Output = Path.Combine(root, "prior2") });
        Assert.Equal(2, Directory.GetFiles(classDir, "class-*.png").Length);
    }

    [Fact]
    public void GradientCheckpointingTrainsTheSameWeights()
    {
        var plain = Trainer.Train(Config("lora", "plain", steps: 3));
        var checkpointed = Trainer.Train(Config("lora", "checkpointed", steps: 3) with { GradientCheckpointing = true });
        using var a = TensorFile.Open(Path.Combine(plain.RunFolder, "checkpoints", "step-000003", "trained.safetensors"));
        using var b = TensorFile.Open(Path.Combine(checkpointed.RunFolder, "checkpoints", "step-000003", "trained.safetensors"));
        // Recomputing blocks in backward sums the gradients of shared inputs (time embedding, text) in
        // another order, so float32 rounding differs in the last bits: close, not identical.
        var worst = 0.0;
        foreach (var name in a.Names)
        {
            var x = a.ReadTensor(name).To(DType.Float32).ToArray<float>();
            var y = b.ReadTensor(name).To(DType.Float32).ToArray<float>();
            for (var i = 0; i < x.Length; i++) worst = Math.Max(worst, Math.Abs(x[i] - y[i]));
        }
        Assert.True(worst < 1e-6, $"largest difference {worst}");
    }

    private static IEnumerable<string?> Checkpoints(string runFolder) =>
        Directory.GetDirectories(Path.Combine(runFolder, "checkpoints")).Select(Path.GetFileName).Order(StringComparer.Ordinal);

    [Fact]
    public void EpochsCountEveryImageTimesItsRepeatsAndMarkTheirSavesAndSamples()
    {
        // 4 images at batch 2: 2 batches an epoch, so 3 epochs are 6 steps.
        var config = Config("lora", "epochs") with { MaxTrainEpochs = 3, TrainBatchSize = 2, SaveEveryNEpochs = 1, SampleEveryNEpochs = 2, SampleSteps = 2 };
        var report = Trainer.Train(config);

        Assert.Equal(6, report.Steps);
        Assert.Equal(3, report.Epochs);
        // kohya's per-epoch results NAME-000001...; the last epoch's is the run's own result.
        Assert.True(File.Exists(Path.Combine(report.RunFolder, "epochs-000001.safetensors")));
        Assert.True(File.Exists(Path.Combine(report.RunFolder, "epochs-000002.safetensors")));
        Assert.False(File.Exists(Path.Combine(report.RunFolder, "epochs-000003.safetensors")));
        Assert.Equal(["step-000002", "step-000004", "step-000006"],
            Checkpoints(report.RunFolder));
        // Samples at the end of epoch 2 (step 4) and of the run.
        Assert.Equal(["000004", "000006"], report.Samples.Select(s => Path.GetFileName(s)[5..11]).Distinct().Order(StringComparer.Ordinal));
        var log = File.ReadAllLines(Path.Combine(report.RunFolder, "log.jsonl")).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal([1, 1, 2, 2, 3, 3], log.Select(e => e.GetProperty("epoch").GetInt32()));
        Assert.All(log, e => Assert.Equal(3, e.GetProperty("max_epochs").GetInt32()));
        Assert.All(log, e => Assert.Equal(6, e.GetProperty("max_steps").GetInt32()));
    }

    [Fact]
    public void SamplesFollowAKohyaPromptFileAndAMistakeInItStopsTheRunBeforeItTrains()
    {
        var prompts = Path.Combine(root, "prompts.txt");
        File.WriteAllText(prompts, "a red square --w 64 --h 96 --s 2\na blue square --n red --s 2 --d 9\n");
        var report = Trainer.Train(Config("lora", "prompted", steps: 1) with { SamplePromptsFile = prompts, SampleEveryNSteps = 1 });
        var images = report.Samples.Distinct().Order(StringComparer.Ordinal).Select(s => ImageCodec.Load(s)).ToList();
        Assert.Equal([(64, 96), (64, 64)], images.Select(i => (i.Width, i.Height)));

        File.WriteAllText(prompts, "a red square --w 60\n");
        var broken = Config("lora", "broken", steps: 1) with { SamplePromptsFile = prompts, SampleEveryNSteps = 1 };
        Assert.StartsWith("sample_prompts_file: ", Assert.Throws<TrainingConfigException>(() => Trainer.Train(broken)).Message);
        Assert.False(Directory.Exists(Path.Combine(broken.Output!, "checkpoints")));
    }

    [Fact]
    public void EpochsWithAccumulationRoundTheStepsUpAndMarkTheStepThatEndsTheEpoch()
    {
        // 4 images at batch 1, accumulation 3: 2 epochs are 8 batches, so 3 steps (the last takes a batch of epoch 3);
        // epoch 1 ends inside step 2's accumulation (batches 4-6), so step 2 is epoch 1's mark; epoch 2's falls on the
        // last step, whose result is the run's own.
        var config = Config("lora", "accumulated") with { MaxTrainEpochs = 2, GradientAccumulationSteps = 3, SaveEveryNEpochs = 1 };
        var report = Trainer.Train(config);
        Assert.Equal(3, report.Steps);
        Assert.Equal(3, report.Epochs);
        Assert.True(File.Exists(Path.Combine(report.RunFolder, "accumulated-000001.safetensors")));
        Assert.False(File.Exists(Path.Combine(report.RunFolder, "accumulated-000002.safetensors")));
        Assert.True(File.Exists(Path.Combine(report.RunFolder, "accumulated.safetensors")));
        Assert.Equal(["step-000002", "step-000003"],
            Checkpoints(report.RunFolder));
    }

    [Fact]
    public void ResumeIgnoresCheckpointsAWriteDidNotFinish()
    {
        var config = Config("lora", "crashed", steps: 2) with { SaveEveryNSteps = 1 };
        Trainer.Train(config);
        var checkpoints = Path.Combine(config.Output!, "checkpoints");
        // What a crash mid-write leaves: a temporary folder, and a step folder without its state.json.
        Directory.CreateDirectory(Path.Combine(checkpoints, ".step-000003.abc.tmp"));
        var torn = Path.Combine(checkpoints, "step-000004");
        Directory.CreateDirectory(torn);
        File.WriteAllBytes(Path.Combine(torn, "trained.safetensors"), [1, 2, 3]);
        var resumed = Trainer.Resume(config.Output!, maxTrainSteps: 3);
        Assert.Equal(3, resumed.Steps);
        Assert.True(File.Exists(Path.Combine(checkpoints, "step-000003", "state.json")));
    }

    [Fact]
    public void ResumeRemovesWhatAKilledRunLeftHalfWritten()
    {
        var config = Config("lora", "killed", steps: 2) with { SaveEveryNSteps = 1 };
        Trainer.Train(config);
        var run = config.Output!;
        // What kill -9 leaves mid-write: the temporary folder of a training state, temporary files beside run.json,
        // the results and the samples, and the old folder of a state being replaced.
        var leftovers = new[]
        {
            Path.Combine(run, "checkpoints", $".step-000003.{Guid.NewGuid():N}.tmp"),
            Path.Combine(run, "checkpoints", $".step-000002.{Guid.NewGuid():N}.old"),
        };
        foreach (var folder in leftovers) Directory.CreateDirectory(folder);
        File.WriteAllBytes(Path.Combine(leftovers[0], "trained.safetensors"), [1, 2, 3]);
        var files = new[]
        {
            Path.Combine(run, $".run.json.{Guid.NewGuid():N}.tmp"),
            Path.Combine(run, $".killed.safetensors.{Guid.NewGuid():N}.tmp"),
            Path.Combine(run, "samples", $".step-000002-0.png.{Guid.NewGuid():N}.tmp"),
        };
        Directory.CreateDirectory(Path.Combine(run, "samples"));
        foreach (var file in files) File.WriteAllBytes(file, [1]);
        // Files a crash cannot have written stay, even when their names end in .tmp.
        var mine = Path.Combine(run, "notes.tmp");
        File.WriteAllText(mine, "kept");

        var resumed = Trainer.Resume(run, maxTrainSteps: 3);

        Assert.Equal(3, resumed.Steps);
        Assert.All(leftovers, f => Assert.False(Directory.Exists(f), f));
        Assert.All(files, f => Assert.False(File.Exists(f), f));
        Assert.True(File.Exists(mine));
        Assert.Equal(["step-000001", "step-000002", "step-000003"],
            Directory.GetFileSystemEntries(Path.Combine(run, "checkpoints")).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void TheTrainerCachesLatentsOnlyWhenEveryDrawIsTheSameCropAndCachingChangesNoWeight()
    {
        // 4 images, center crop, no flips: one latent each at most, whatever the number of steps.
        var cached = Trainer.Train(Config("lora", "cached", steps: 4));
        Assert.InRange(cached.CachedLatents, 1, 4);
        Assert.Equal(cached.CachedLatents * 4 * 8 * 8 * sizeof(float), cached.CachedLatentBytes);
        var off = Trainer.Train(Config("lora", "off", steps: 4) with { CacheLatents = false });
        Assert.Equal((0, 0L), (off.CachedLatents, off.CachedLatentBytes));
        var random = Trainer.Train(Config("lora", "random", steps: 4) with { CenterCrop = false });
        Assert.Equal((0, 0L), (random.CachedLatents, random.CachedLatentBytes));
        // A cached latent is the one the VAE gives at each draw: the same weights either way.
        Assert.Equal(File.ReadAllBytes(Path.Combine(cached.RunFolder, "checkpoints", "step-000004", "trained.safetensors")),
            File.ReadAllBytes(Path.Combine(off.RunFolder, "checkpoints", "step-000004", "trained.safetensors")));
    }

    private sealed class CancelAtStep(long step, CancellationTokenSource source) : IProgress<TrainingEvent>
    {
        public void Report(TrainingEvent value)
        {
            if (value.Step == step) source.Cancel();
        }
    }

    [Fact]
    public void AStoppedRunKeepsItsStepsAndResumesExactly()
    {
        var config = Config("lora", "stopped", steps: 6) with { GradientAccumulationSteps = 2 };
        using var stop = new CancellationTokenSource();
        Assert.ThrowsAny<OperationCanceledException>(() => Trainer.Train(config, new CancelAtStep(3, stop), stop.Token));
        Assert.True(File.Exists(Path.Combine(config.Output!, "checkpoints", "step-000003", "state.json")));
        var resumed = Trainer.Resume(config.Output!);
        var straight = Trainer.Train(config with { Output = Path.Combine(root, "unstopped") });
        Assert.Equal(File.ReadAllBytes(Path.Combine(straight.RunFolder, "checkpoints", "step-000006", "trained.safetensors")),
            File.ReadAllBytes(Path.Combine(resumed.RunFolder, "checkpoints", "step-000006", "trained.safetensors")));
    }

    [Fact]
    public void SampleAndSaveRequestsAreTakenAtTheNextStepBoundaryAndLeaveTheWeightsUnchanged()
    {
        var straight = Trainer.Train(Config("lora", "straight") with { SaveEveryNSteps = 100, SampleSteps = 2 });
        var done = new List<string>();
        var control = new RunControl { Done = done.Add };
        var boundaries = 0;
        void Boundary()
        {
            // Asked during step 2's boundary and step 3's: taken at steps 3 and 4.
            if (++boundaries == 2) control.RequestSample();
            if (boundaries == 3) control.RequestSave();
        }
        var asked = Trainer.Train(Config("lora", "asked") with { SaveEveryNSteps = 100, SampleSteps = 2, SampleAtStart = true }, stepBoundary: Boundary, control: control);

        Assert.Equal(["sampled step 3", "saved step 4: asked-step-000004.safetensors"], done);
        Assert.Equal(["step-000000-0.png", "step-000003-0.png"], Directory.GetFiles(Path.Combine(asked.RunFolder, "samples")).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.Equal(["step-000004", "step-000006"], Directory.GetDirectories(Path.Combine(asked.RunFolder, "checkpoints")).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        using (var saved = TensorFile.Open(Path.Combine(asked.RunFolder, "asked-step-000004.safetensors")))
            Assert.NotEmpty(saved.Names);
        Assert.False(Directory.Exists(Path.Combine(straight.RunFolder, "samples")));
        Assert.Equal(File.ReadAllBytes(Path.Combine(straight.RunFolder, "checkpoints", "step-000006", "trained.safetensors")),
            File.ReadAllBytes(Path.Combine(asked.RunFolder, "checkpoints", "step-000006", "trained.safetensors")));
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
