using System.Runtime.InteropServices;
using SdAppliance.Formats;
using SdAppliance.Imaging;
using SdAppliance.Models.Conversion;
using SdAppliance.Models.Loading;
using SdAppliance.Training.Data;

namespace SdAppliance.Training.Tests;

/// <summary>
/// Training with a separate VAE (the <c>vae</c> setting, kohya's <c>--vae</c>) and a full fine-tune's two results:
/// the EMA file and, with <c>save_live_weights</c>, the live one.
/// </summary>
public sealed class VaeAndLiveWeightsTests : IDisposable
{
    private static readonly string TinyModel = Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sd");
    private readonly string root = Directory.CreateTempSubdirectory("sdapp-vae-train-").FullName;

    public void Dispose() => Directory.Delete(root, recursive: true);

    /// <summary>The tiny model's own VAE file (diffusers names, one file) with the decoder's last bias moved.</summary>
    private string ShiftedVae()
    {
        using var own = TensorFile.Open(Path.Combine(TinyModel, "vae", "diffusion_pytorch_model.safetensors"));
        var tensors = new List<SafetensorsTensor>();
        foreach (var (name, shape) in own.Shapes)
        {
            var bytes = own.ReadBytes(name);
            if (name == "decoder.conv_out.bias")
            {
                var values = MemoryMarshal.Cast<byte, float>(bytes.AsSpan());
                for (var i = 0; i < values.Length; i++) values[i] += 0.25f;
            }
            tensors.Add(new SafetensorsTensor(name, own.DTypeOf(name), shape, bytes));
        }
        var file = Path.Combine(root, "shifted-vae.safetensors");
        SafetensorsFile.Write(file, tensors);
        return file;
    }

    [Fact]
    public void TheLatentCacheKnowsTheVaeByItsWeights()
    {
        var folder = Path.Combine(TinyModel, "vae");
        using var own = ModelLoader.Load(TinyModel);
        using var sameVae = ModelLoader.Load(TinyModel, new ModelLoadOptions(Vae: folder));
        using var otherVae = ModelLoader.Load(TinyModel, new ModelLoadOptions(Vae: ShiftedVae()));
        // One VAE given apart or inside the model: the same latents; another VAE: stored latents are not reused.
        Assert.Equal(LatentCache.ContentHash(own.Vae), LatentCache.ContentHash(sameVae.Vae));
        Assert.NotEqual(LatentCache.ContentHash(own.Vae), LatentCache.ContentHash(otherVae.Vae));
    }

    [Fact]
    public void VaeAndSaveLiveWeightsAreChecked()
    {
        var baseConfig = new TrainingConfig { Model = TinyModel, Data = root, Output = Path.Combine(root, "run") };
        var missing = Path.Combine(root, "none.safetensors");
        var e = Assert.Throws<TrainingConfigException>(() => (baseConfig with { Vae = missing }).Validate());
        Assert.StartsWith("vae: ", e.Message, StringComparison.Ordinal);
        Assert.Contains(missing, e.Message, StringComparison.Ordinal);

        var lora = Assert.Throws<TrainingConfigException>(() => (baseConfig with { SaveLiveWeights = true }).Validate());
        Assert.StartsWith("save_live_weights: ", lora.Message, StringComparison.Ordinal);
        var noEma = Assert.Throws<TrainingConfigException>(() => (baseConfig with { Method = "finetune", UseEma = false, SaveLiveWeights = true }).Validate());
        Assert.StartsWith("save_live_weights: ", noEma.Message, StringComparison.Ordinal);
        (baseConfig with { Method = "finetune", SaveLiveWeights = true, Vae = Path.Combine(TinyModel, "vae") }).Validate();
    }

    private string MakeDataset()
    {
        var folder = Path.Combine(root, "data");
        Directory.CreateDirectory(folder);
        for (var i = 0; i < 2; i++)
        {
            var image = new RgbImage(64, 64, 3);
            for (var y = 0; y < 64; y++)
                for (var x = 0; x < 64; x++)
                {
                    var p = image.Pixel(x, y);
                    var inside = x >= 8 + 8 * i && x < 40 + 8 * i && y >= 16 && y < 48;
                    p[0] = inside ? (byte)255 : (byte)0;
                    p[2] = inside ? (byte)0 : (byte)255;
                }
            ImageCodec.Save(image, Path.Combine(folder, $"img{i}.png"));
            File.WriteAllText(Path.Combine(folder, $"img{i}.txt"), "a red square on a blue background");
        }
        return folder;
    }

    [Fact]
    public void AFineTuneWritesTheEmaFileAndTheLiveOne()
    {
        var config = new TrainingConfig
        {
            Method = "finetune", Model = TinyModel, Data = MakeDataset(), Output = Path.Combine(root, "run"), OutputName = "tuned",
            Resolution = 64, MaxTrainSteps = 1, LearningRate = 1e-3, Seed = 7, SaveLiveWeights = true, Vae = ShiftedVae(),
        };
        var report = Trainer.Train(config);
        var emaFile = Path.Combine(config.Output!, "tuned.safetensors");
        var liveFile = Path.Combine(config.Output!, "tuned-live.safetensors");
        Assert.Contains(emaFile, report.Outputs);
        Assert.Contains(liveFile, report.Outputs);

        var baseFile = Path.Combine(root, "base.safetensors");
        ModelConverter.Convert(TinyModel, baseFile);
        using var start = TensorFile.Open(baseFile);
        using var ema = TensorFile.Open(emaFile);
        using var live = TensorFile.Open(liveFile);
        Assert.Equal(start.Names.Order(StringComparer.Ordinal), live.Names.Order(StringComparer.Ordinal));
        // One optimizer step, then the EMA update at step 1 with diffusers' warm-up: decay = min(0.9999, (1 + 1) / (10 + 1)) = 2/11,
        // so the EMA is 2/11 of the start plus 9/11 of the live weights. A lerp in float32 of weights below 1 is off by a few
        // 1e-7 at most; 1e-5 leaves room and stays far below what telling EMA from live needs (2/11 of a step of ~1e-3).
        const double decay = 2.0 / 11;
        double moved = 0, worst = 0;
        foreach (var name in start.Names.Where(n => n.StartsWith("model.diffusion_model.", StringComparison.Ordinal)))
        {
            var s = MemoryMarshal.Cast<byte, float>(start.ReadBytes(name)).ToArray();
            var l = MemoryMarshal.Cast<byte, float>(live.ReadBytes(name)).ToArray();
            var e = MemoryMarshal.Cast<byte, float>(ema.ReadBytes(name)).ToArray();
            for (var i = 0; i < s.Length; i++)
            {
                moved = Math.Max(moved, Math.Abs(l[i] - s[i]));
                worst = Math.Max(worst, Math.Abs(e[i] - (decay * s[i] + (1 - decay) * l[i])));
            }
        }
        Assert.True(moved > 1e-4, $"the step moved the UNet by {moved} at most: too little to tell the files apart");
        Assert.True(worst < 1e-5, $"the EMA file is off the 2/11 · start + 9/11 · live mix by {worst}");

        // Both files carry the VAE the run used, not the model's own.
        const string bias = "first_stage_model.decoder.conv_out.bias";
        var shifted = MemoryMarshal.Cast<byte, float>(start.ReadBytes(bias)).ToArray().Select(v => v + 0.25f).ToArray();
        Assert.Equal(shifted, MemoryMarshal.Cast<byte, float>(ema.ReadBytes(bias)).ToArray());
        Assert.Equal(shifted, MemoryMarshal.Cast<byte, float>(live.ReadBytes(bias)).ToArray());
    }
}
