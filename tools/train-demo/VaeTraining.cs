using SdAppliance.Imaging;
using SdAppliance.Models.Vae;
using SdAppliance.Tools.DemoData;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using SdAppliance.Torch.Optim;

namespace SdAppliance.Tools.TrainDemo;

/// <summary>
/// The VAE's own loop (the Trainer trains the denoiser, not the autoencoder): L1 + MSE reconstruction of
/// freshly drawn scenes from a posterior sample, plus a small KL term towards N(0, 1), AdamW with a
/// linear decay to a tenth of the rate.
/// </summary>
public static class VaeTraining
{
    // Small enough that reconstruction dominates (as SD's 1e-6 on summed losses), large enough to keep the
    // latents bounded and the posterior noise meaningful: the decoder then tolerates imperfect latents.
    private const double KlWeight = 1e-4;

    /// <param name="fresh">Random weights: start the posterior narrow. False continues a trained VAE (a warm restart).</param>
    /// <param name="decoderOnly">Train the decoder alone (SD's ft-MSE recipe): the latent space, which a UNet may already be learning, stays as it is.</param>
    public static double Train(AutoencoderKL vae, int seed, int steps, int batchSize, double lr, bool fresh, Action<string> log, bool decoderOnly = false)
    {
        vae.Train();
        var parameters = decoderOnly
            ? vae.NamedParameters().Where(p => !p.Name.StartsWith("encoder.", StringComparison.Ordinal) && !p.Name.StartsWith("quant_conv.", StringComparison.Ordinal)).Select(p => p.Parameter).ToList()
            : vae.Parameters().ToList();
        if (decoderOnly)
        {
            vae.Encoder.Freeze();
            if (vae.NamedChildren().FirstOrDefault(c => c.Name == "quant_conv").Module is { } quant) quant.Freeze();
        }
        // The posterior starts narrow (log-variance -6, std 0.05): from random weights it would start at std 1,
        // and the decoder would spend its first hundreds of steps seeing noise instead of the encoder's signal.
        if (fresh && vae.GetParameter("quant_conv.bias") is { } bias)
            using (Autograd.NoGrad())
            using (var logvar = bias.Narrow(0, bias.Size(0) / 2, bias.Size(0) / 2))
                logvar.Fill_(-6);
        using var optimizer = new AdamW(parameters, new AdamWOptions { Lr = lr, WeightDecay = 0 });
        using var noise = new Generator((ulong)seed + 100);
        // A stream of new scenes (all base shapes, same grammar) rather than the fixed dataset: the VAE cannot overfit.
        var random = new Random(seed + 100);
        var smoothed = double.NaN;
        for (var step = 1; step <= steps; step++)
        {
            // A short warm-up, then a linear decay to a tenth.
            optimizer.ParamGroups[0].Lr = lr * Math.Min(1, step / 20.0) * (1 - 0.9 * (step - 1) / Math.Max(1, steps - 1));
            double value;
            using (var scope = torch.NewDisposeScope())
            {
                var scenes = Enumerable.Range(0, batchSize).Select(_ => DemoScene.Random(random, Shapes.Base)).ToList();
                var images = ToTensor(scenes.Select(s => s.Render()).ToList());
                var posterior = vae.Encode(images);
                var z = posterior.Sample(noise);
                var reconstruction = vae.Decode(z);
                var diff = reconstruction - images;
                var loss = diff.Abs().Mean() + diff.Square().Mean() + EdgeLoss(reconstruction, images)
                    + posterior.Kl().Mean() * (KlWeight / (z.Size(1) * z.Size(2) * z.Size(3)));
                value = loss.Item();
                loss.Backward();
            }
            using (GradClipping.ClipGradNorm(parameters, 1.0)) { }
            optimizer.Step();
            optimizer.ZeroGrad();
            smoothed = double.IsNaN(smoothed) ? value : 0.95 * smoothed + 0.05 * value;
            if (step % 50 == 0 || step == steps) log($"vae{(decoderOnly ? " decoder" : "")} step {step}/{steps} loss {smoothed:F4}");
        }
        vae.Eval();
        return smoothed;
    }

    /// <summary>
    /// L1 between the horizontal and vertical pixel differences of the two images: flat colours dominate the
    /// plain losses, and this term is what makes the shapes' outlines sharp early rather than last.
    /// </summary>
    private static Tensor EdgeLoss(Tensor reconstruction, Tensor images)
    {
        long h = images.Size(2), w = images.Size(3);
        var dxR = reconstruction.Narrow(3, 1, w - 1) - reconstruction.Narrow(3, 0, w - 1);
        var dxI = images.Narrow(3, 1, w - 1) - images.Narrow(3, 0, w - 1);
        var dyR = reconstruction.Narrow(2, 1, h - 1) - reconstruction.Narrow(2, 0, h - 1);
        var dyI = images.Narrow(2, 1, h - 1) - images.Narrow(2, 0, h - 1);
        return (dxR - dxI).Abs().Mean() + (dyR - dyI).Abs().Mean();
    }

    /// <summary>SD's recipe: 1 / std of the posterior means of training images, so scaled latents have unit variance.</summary>
    public static double ScalingFactor(AutoencoderKL vae, IReadOnlyList<DemoScene> scenes)
    {
        using var noGrad = Autograd.NoGrad();
        var means = new List<float>();
        for (var i = 0; i < scenes.Count; i += 64)
        {
            using var scope = torch.NewDisposeScope();
            var images = ToTensor(scenes.Skip(i).Take(64).Select(s => s.Render()).ToList());
            var posterior = vae.Encode(images);
            means.AddRange(posterior.Mean.Contiguous().ToArray<float>());
        }
        var mean = means.Average(v => (double)v);
        var variance = means.Sum(v => (v - mean) * (v - mean)) / (means.Count - 1);
        return 1 / Math.Sqrt(variance);
    }

    /// <summary>RGB bytes to a [B, 3, H, W] float tensor in [-1, 1], the VAE's input range.</summary>
    public static Tensor ToTensor(IReadOnlyList<RgbImage> images)
    {
        int h = images[0].Height, w = images[0].Width;
        var data = new float[images.Count * 3 * h * w];
        for (var b = 0; b < images.Count; b++)
        {
            var pixels = images[b].Pixels;
            for (var y = 0; y < h; y++)
                for (var x = 0; x < w; x++)
                    for (var c = 0; c < 3; c++)
                        data[((b * 3 + c) * h + y) * w + x] = pixels[(y * w + x) * 3 + c] / 127.5f - 1;
        }
        return torch.Tensor(data, images.Count, 3, h, w);
    }
}
