using SdAppliance.Imaging;
using SdAppliance.Torch;
using SdAppliance.Training.Data;

namespace SdAppliance.Training.Tests;

/// <summary>kohya's loss options against numbers worked out here by hand: the losses, the huber schedules, the SNR scale,
/// zero terminal SNR, pyramid noise, the loss mask and the settings' refusals.</summary>
public sealed class LossOptionsTests
{
    // Differences x = prediction - target: example 0 has 0.5 and -1, example 1 has 2 and 0.
    private static readonly float[] Predictions = [1.5f, 0f, 2f, 3f];
    private static readonly float[] Targets = [1f, 1f, 0f, 3f];
    private static readonly double[][] Differences = [[0.5, -1], [2, 0]];

    private static Tensor Pair(float[] values) => torch.Tensor(values, 2, 1, 1, 2);

    [Theory]
    [InlineData(LossKind.L2)]
    [InlineData(LossKind.L1)]
    [InlineData(LossKind.Huber)]
    [InlineData(LossKind.SmoothL1)]
    public void EachLossTypeIsKohyasFormulaElementByElementWithItsExamplesOwnThreshold(LossKind kind)
    {
        double[] c = [0.5, 0.2];
        using var prediction = Pair(Predictions);
        using var target = Pair(Targets);
        using var thresholds = torch.Tensor(c.Select(v => (float)v).ToArray());
        using var loss = Losses.Elementwise(prediction, target, kind, thresholds);
        Assert.Equal([2L, 1, 1, 2], loss.Shape.ToArray());
        var values = loss.ToArray<float>();
        for (var b = 0; b < 2; b++)
            for (var i = 0; i < 2; i++)
            {
                var x = Differences[b][i];
                var expected = kind switch
                {
                    LossKind.L2 => x * x,
                    LossKind.L1 => Math.Abs(x),
                    LossKind.Huber => 2 * c[b] * (Math.Sqrt(x * x + c[b] * c[b]) - c[b]),
                    _ => 2 * (Math.Sqrt(x * x + c[b] * c[b]) - c[b]),
                };
                Assert.Equal(expected, values[b * 2 + i], 5);
            }
        // By hand for x = 0.5, c = 0.5: huber 2·0.5·(√0.5 − 0.5) = 0.20711, smooth_l1 twice that.
        if (kind == LossKind.Huber) Assert.Equal(0.20711, values[0], 4);
        if (kind == LossKind.SmoothL1) Assert.Equal(0.41421, values[0], 4);
        // The example's loss is the mean over its elements: (0.25 + 1) / 2 and (4 + 0) / 2 for l2.
        using var perExample = Losses.PerExample(prediction, target, kind, thresholds);
        var means = perExample.ToArray<float>();
        Assert.Equal((values[0] + values[1]) / 2, means[0], 6);
        Assert.Equal((values[2] + values[3]) / 2, means[1], 6);
        if (kind == LossKind.L2) Assert.Equal([0.625f, 2f], means);
    }

    [Fact]
    public void HuberNeedsItsThreshold() =>
        Assert.Throws<ArgumentException>(() => Losses.Elementwise(Pair(Predictions), Pair(Targets), LossKind.Huber));

    [Fact]
    public void TheHuberSchedulesGiveKohyasThresholdPerTimestep()
    {
        // A made-up schedule of 1000 steps whose ᾱ is 0.5 at t = 1 (σ = 1) and 0.8 at t = 2 (σ = 0.5).
        var alphas = Enumerable.Repeat(0.9f, 1000).ToArray();
        alphas[1] = 0.5f;
        alphas[2] = 0.8f;
        long[] timesteps = [0, 500, 1000];
        // constant: c · scale.
        Assert.Equal([0.2f, 0.2f, 0.2f], Losses.HuberThresholds(LossKind.Huber, HuberScheduleKind.Constant, 0.1, 2, alphas, 1000, timesteps)!);
        // exponential: exp(ln(c)·t / T) · scale = c^(t/T) · scale: 1, √0.1 and 0.1 (times 2).
        var exponential = Losses.HuberThresholds(LossKind.SmoothL1, HuberScheduleKind.Exponential, 0.1, 2, alphas, 1000, timesteps)!;
        Assert.Equal(2, exponential[0], 6);
        Assert.Equal(2 * 0.316228, exponential[1], 5);
        Assert.Equal(0.2, exponential[2], 6);
        // snr: (1 − c) / (1 + σ)² + c, unscaled: 0.9 / 4 + 0.1 and 0.9 / 2.25 + 0.1.
        var snr = Losses.HuberThresholds(LossKind.Huber, HuberScheduleKind.Snr, 0.1, 2, alphas, 1000, [1, 2])!;
        Assert.Equal(0.325, snr[0], 6);
        Assert.Equal(0.5, snr[1], 6);
        // A terminal ᾱ of 0 (zero terminal SNR): σ is infinite and the threshold is c.
        alphas[999] = 0;
        Assert.Equal(0.1f, Losses.HuberThresholds(LossKind.Huber, HuberScheduleKind.Snr, 0.1, 1, alphas, 1000, [999])![0], 6);
        // l2 and l1 have none.
        Assert.Null(Losses.HuberThresholds(LossKind.L2, HuberScheduleKind.Snr, 0.1, 1, alphas, 1000, timesteps));
        Assert.Null(Losses.HuberThresholds(LossKind.L1, HuberScheduleKind.Constant, 0.1, 1, alphas, 1000, timesteps));
    }

    [Fact]
    public void TheVPredictionScaleIsSnrOverSnrPlusOneWithTheSnrCappedAt1000()
    {
        Assert.Equal(0.5, Losses.VPredictionScale(0.5), 12);            // SNR 1
        Assert.Equal(0.8, Losses.VPredictionScale(0.8), 12);            // SNR 4: 4/5
        Assert.Equal(1000.0 / 1001, Losses.VPredictionScale(0.99999999), 12);
        Assert.Equal(0, Losses.VPredictionScale(0), 12);                // zero terminal SNR's last step
    }

    [Fact]
    public void ZeroTerminalSnrEndsTheScheduleAtZeroAndKeepsItsFirstValue()
    {
        const string sd = """{"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "prediction_type": "v_prediction"}""";
        using var plain = Losses.TrainingScheduler(sd, zeroTerminalSnr: false);
        using var zero = Losses.TrainingScheduler(sd, zeroTerminalSnr: true);
        Assert.Equal("v_prediction", zero.PredictionType);
        // By hand: scaled_linear βₜ = (√0.00085 + t/999 · (√0.012 − √0.00085))², ᾱ = ∏(1 − β).
        var betas = Enumerable.Range(0, 1000).Select(t => Math.Pow(Math.Sqrt(0.00085) + t / 999.0 * (Math.Sqrt(0.012) - Math.Sqrt(0.00085)), 2)).ToArray();
        var ac = new double[1000];
        var p = 1.0;
        for (var t = 0; t < 1000; t++) ac[t] = p *= 1 - betas[t];
        Assert.Equal(ac[999], plain.AlphasCumprod[999], 6);
        Assert.True(plain.AlphasCumprod[999] > 0.004);
        // Lin et al.: √ᾱ'ₜ = (√ᾱₜ − √ᾱ_T) · √ᾱ₀ / (√ᾱ₀ − √ᾱ_T): 0 at the end, the first value unchanged (1 − β₀ = 0.99915).
        Assert.Equal(0f, zero.AlphasCumprod[999]);
        Assert.Equal(0.99915, zero.AlphasCumprod[0], 6);
        double first = Math.Sqrt(ac[0]), last = Math.Sqrt(ac[999]);
        foreach (var t in new[] { 1, 250, 500, 998 })
        {
            var expected = Math.Pow((Math.Sqrt(ac[t]) - last) * first / (first - last), 2);
            Assert.Equal(expected, zero.AlphasCumprod[t], 5);
        }
    }

    [Fact]
    public void PyramidNoiseAddsUpsampledLayersFromTheRunsGeneratorAndEndsAtUnitDeviation()
    {
        using var noise = torch.Randn([2, 4, 16, 16], new Generator(1));
        using var generator = new Generator(5);
        using var pyramid = Losses.PyramidNoise(noise, 1, 0.3, generator);
        Assert.Equal(1.0, pyramid.Std().Item(), 5);
        // One iteration by hand: r is drawn (r⁰ = 1 whatever it is), then a full-size layer at weight 0.3⁰ = 1.
        using var replay = new Generator(5);
        using var r = torch.Rand([1], replay);
        using var layer = torch.Randn([2, 4, 16, 16], replay);
        using var sum = noise + layer;
        using var expected = sum / sum.Std();
        Assert.Equal(expected.ToArray<float>(), pyramid.ToArray<float>());
        // More iterations draw more: the generator moves on, and the same seed draws the same pyramid.
        using var six = Losses.PyramidNoise(noise, 6, 0.3, new Generator(5));
        using var again = Losses.PyramidNoise(noise, 6, 0.3, new Generator(5));
        Assert.Equal(six.ToArray<float>(), again.ToArray<float>());
        Assert.NotEqual(pyramid.ToArray<float>(), six.ToArray<float>());
        Assert.Equal(1.0, six.Std().Item(), 5);
    }

    [Theory]
    [InlineData(LossKind.L2)]
    [InlineData(LossKind.Huber)]
    public void PixelsWhereTheMaskIsZeroChangeNeitherTheLossNorTheGradient(LossKind kind)
    {
        // Mask [1, 1, 2, 2]: the top-right pixel is out (0), the bottom-left half in (0.5).
        using var mask = torch.Tensor([1f, 0f, 0.5f, 1f], 1, 1, 2, 2);
        using var target = torch.Tensor([0f, 0f, 0f, 0f, 1f, 1f, 1f, 1f], 1, 2, 2, 2);
        using var thresholds = torch.Tensor([0.3f]);
        float[] first = [0.5f, 2f, -1f, 0.25f, 1f, -3f, 2f, 1.5f];
        float[] second = (float[])first.Clone();
        second[1] = 40f;   // channel 0's masked pixel
        second[5] = -7f;   // channel 1's
        var (lossA, gradA) = LossAndGradient(first);
        var (lossB, gradB) = LossAndGradient(second);
        Assert.Equal(lossA, lossB);
        Assert.Equal(gradA, gradB);
        Assert.Equal(0f, gradA[1]);
        Assert.Equal(0f, gradA[5]);
        if (kind == LossKind.L2)
        {
            // By hand, kohya's multiplied (not renormalised) mean of x² · mask over the 8 elements: channel 0 has x = 0.5, 2, −1, 0.25,
            // channel 1 x = 0, −4, 1, 0.5, and the mask is 1, 0, 0.5, 1 in each.
            var expected = (0.25 * 1 + 4 * 0 + 1 * 0.5 + 0.0625 * 1 + 0 * 1 + 16 * 0 + 1 * 0.5 + 0.25 * 1) / 8;
            Assert.Equal(expected, lossA, 6);
        }

        (double, float[]) LossAndGradient(float[] values)
        {
            using var prediction = torch.Tensor(values, 1, 2, 2, 2).RequiresGrad_();
            using var loss = Losses.PerExample(prediction, target, kind, thresholds, mask);
            using var total = loss.Sum();
            total.Backward();
            using var grad = prediction.Grad!;
            return (total.Item(), grad.ToArray<float>());
        }
    }

    [Fact]
    public void AMaskFromTheFolderIsCutAsItsImageAndAreaInterpolatedToTheLatents()
    {
        using var folder = new DataTestFolder();
        folder.Image("data/a.png", 64, 64);
        folder.Text("data/a.txt", "a");
        // Black (0) left of x = 36, white (1) from there: the 8-pixel latent columns are 0, 0, 0, 0, 4/8, 1, 1, 1.
        var mask = new RgbImage(64, 64, 3);
        for (var y = 0; y < 64; y++)
            for (var x = 0; x < 64; x++)
            {
                var p = mask.Pixel(x, y);
                p[0] = x >= 36 ? (byte)255 : (byte)0;
                p[1] = p[2] = 128;  // only the red channel counts
            }
        Directory.CreateDirectory(folder.PathOf("masks"));
        ImageCodec.Save(mask, folder.PathOf("masks/a.png"));
        var config = new TrainingConfig { Data = folder.PathOf("data"), Output = "o", Resolution = 64, MaskedLoss = true, ConditioningDataDir = folder.PathOf("masks") };
        config.Validate();
        var dataset = TrainingDataset.Scan(DatasetOptions.Of(config));
        using var masks = LossMasks.ForRun(config, dataset)!;
        var item = dataset.Items.Single();
        float[] row = [0, 0, 0, 0, 0.5f, 1, 1, 1];
        using (var plain = masks.Get(new TrainingExample(item, 64, 64, false, 0, 0, "a"), 8, 8))
        {
            Assert.Equal([1L, 1, 8, 8], plain.Shape.ToArray());
            var values = plain.ToArray<float>();
            for (var y = 0; y < 8; y++) Assert.Equal(row, values.AsSpan(y * 8, 8).ToArray());
        }
        using (var flipped = masks.Get(new TrainingExample(item, 64, 64, true, 0, 0, "a"), 8, 8))
            Assert.Equal(Enumerable.Reverse(row), flipped.ToArray<float>().AsSpan(0, 8).ToArray());
        // A class image has no mask: 1 everywhere.
        using (var prior = masks.Get(new TrainingExample(item with { IsPrior = true }, 64, 64, false, 0, 0, "a"), 8, 8))
            Assert.All(prior.ToArray<float>(), v => Assert.Equal(1f, v));

        // An image without a mask, and a mask of another size, stop the run naming the folder and the files.
        folder.Image("data/b.jpg", 64, 64);
        var missing = Assert.Throws<TrainingConfigException>(() => LossMasks.ForRun(config, TrainingDataset.Scan(DatasetOptions.Of(config))));
        Assert.StartsWith("conditioning_data_dir: no mask in", missing.Message);
        Assert.Contains("b.jpg", missing.Message);
        folder.Image("masks/b.webp", 32, 64);
        var size = Assert.Throws<TrainingConfigException>(() => LossMasks.ForRun(config, TrainingDataset.Scan(DatasetOptions.Of(config))));
        Assert.Contains("'b.webp' is 32x64, its image 'b.jpg' 64x64", size.Message);
    }

    [Fact]
    public void AnAlphaMaskIsTheImagesAlphaChannelAndAnOpaqueImageWeighsOne()
    {
        using var folder = new DataTestFolder();
        // Transparent top half, half-transparent (128) bottom half.
        var image = new RgbImage(64, 64, 4);
        for (var y = 0; y < 64; y++)
            for (var x = 0; x < 64; x++)
            {
                var p = image.Pixel(x, y);
                p[0] = 200;
                p[3] = y < 32 ? (byte)0 : (byte)128;
            }
        Directory.CreateDirectory(folder.PathOf("data"));
        ImageCodec.Save(image, folder.PathOf("data/a.png"));
        folder.Image("data/b.png", 64, 64);
        var config = new TrainingConfig { Data = folder.PathOf("data"), Output = "o", Resolution = 64, AlphaMask = true };
        config.Validate();
        var dataset = TrainingDataset.Scan(DatasetOptions.Of(config));
        using var masks = LossMasks.ForRun(config, dataset)!;
        var a = dataset.Items.Single(i => i.Path.EndsWith("a.png", StringComparison.Ordinal));
        var b = dataset.Items.Single(i => i.Path.EndsWith("b.png", StringComparison.Ordinal));
        using var batch = masks.Batch([new TrainingExample(a, 64, 64, false, 0, 0, ""), new TrainingExample(b, 64, 64, false, 0, 0, "")], 8, 8);
        Assert.Equal([2L, 1, 8, 8], batch.Shape.ToArray());
        var values = batch.ToArray<float>();
        Assert.All(values.AsSpan(0, 32).ToArray(), v => Assert.Equal(0f, v));
        Assert.All(values.AsSpan(32, 32).ToArray(), v => Assert.Equal(128 / 255f, v, 6));
        Assert.All(values.AsSpan(64, 64).ToArray(), v => Assert.Equal(1f, v));
    }

    [Fact]
    public void TheLossSettingsRefuseBadValuesNamingTheFieldAndTheFix()
    {
        var good = new TrainingConfig { Output = "o", Data = "d" };
        good.Validate();
        (good with { LossType = "huber", HuberSchedule = "exponential", HuberC = 0.5, IpNoiseGamma = 0.1, MultiresNoiseIterations = 6, AlphaMask = true }).Validate();
        (good with { MaskedLoss = true, ConditioningDataDir = "masks" }).Validate();
        (good with { MaskedLoss = true, AlphaMask = true }).Validate();

        void Refused(TrainingConfig config, string message) =>
            Assert.Equal(message, Assert.Throws<TrainingConfigException>(config.Validate).Message);
        Refused(good with { LossType = "mse" }, "loss_type: 'mse' is not one of l2, l1, huber, smooth_l1");
        Refused(good with { HuberSchedule = "linear" }, "huber_schedule: 'linear' is not one of snr, exponential, constant");
        Refused(good with { HuberC = 0 }, "huber_c: 0 must be positive (kohya's default is 0.1)");
        Refused(good with { HuberC = -0.1 }, "huber_c: -0.1 must be positive (kohya's default is 0.1)");
        Refused(good with { HuberScale = 0 }, "huber_scale: 0 must be positive (1 leaves the threshold as huber_c gives it)");
        Refused(good with { MultiresNoiseIterations = 0 }, "multires_noise_iterations: 0 must be at least 1 (leave it out for none)");
        Refused(good with { MultiresNoiseDiscount = 1.5 }, "multires_noise_discount: 1.5 must be in (0, 1] (kohya's default is 0.3)");
        Refused(good with { IpNoiseGamma = -0.1 }, "ip_noise_gamma: -0.1 must not be negative (0: off; 0.1 is usual)");
        Refused(good with { NoiseOffset = -0.05 }, "noise_offset: -0.05 must not be negative (0: off)");
        Refused(good with { MaskedLoss = true }, "masked_loss: give the folder of masks (conditioning_data_dir), or set alpha_mask to use the images' alpha channel");
        Refused(good with { ConditioningDataDir = "masks" }, "conditioning_data_dir: the masks are used only with masked_loss; set masked_loss true or leave conditioning_data_dir out");
        Refused(good with { MaskedLoss = true, ConditioningDataDir = "masks", AlphaMask = true },
            "alpha_mask: the mask comes from conditioning_data_dir or from the alpha channel, not both; leave one out");
        Assert.Equal("huber_c", Assert.Throws<TrainingConfigException>((good with { HuberC = 0 }).Validate).Subject);
    }

    [Fact]
    public void TheSettingsKeepKohyasNamesInRunJsonAndFlags()
    {
        var names = TrainingConfig.Fields.Select(TrainingConfig.FieldName).ToHashSet();
        foreach (var name in new[] { "loss_type", "huber_schedule", "huber_c", "huber_scale", "scale_v_pred_loss_like_noise_pred", "zero_terminal_snr", "ip_noise_gamma",
                     "multires_noise_iterations", "multires_noise_discount", "noise_offset", "masked_loss", "conditioning_data_dir", "alpha_mask" })
            Assert.Contains(name, names);
        var config = new TrainingConfig().With(new Dictionary<string, string> { ["loss_type"] = "smooth_l1", ["huber_c"] = "0.2", ["scale_v_pred_loss_like_noise_pred"] = "" });
        Assert.Equal(("smooth_l1", 0.2, true), (config.LossType, config.HuberC, config.ScaleVPredLossLikeNoisePred));
        // kohya's defaults.
        var defaults = new TrainingConfig();
        Assert.Equal(("l2", "snr", 0.1, 1.0, 0.3), (defaults.LossType, defaults.HuberSchedule, defaults.HuberC, defaults.HuberScale, defaults.MultiresNoiseDiscount));
    }
}
