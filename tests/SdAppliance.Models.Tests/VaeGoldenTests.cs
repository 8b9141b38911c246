using SdAppliance.Models.Vae;
using SdAppliance.Torch;
using static SdAppliance.Models.Tests.UnetVaeFixtures;

namespace SdAppliance.Models.Tests;

/// <summary>
/// A tiny VAE against diffusers: its golden file's encoder moments, posterior sample (drawn from
/// <c>Generator(sampleSeed)</c>) and decoder outputs, the pipeline's decode dividing by the config's scaling factor.
/// </summary>
public abstract class VaeGoldenTestsBase(string model, string file, double scalingFactor, ulong sampleSeed) : IDisposable
{
    private readonly AutoencoderKL vae = LoadTinyVae(model);

    public void Dispose()
    {
        vae.Dispose();
        GC.SuppressFinalize(this);
    }

    [Fact]
    public void EncoderMomentsAndPosteriorMatchDiffusers()
    {
        using var image = Golden(file, "image");
        using var inference = Autograd.InferenceMode();
        using var moments = vae.EncodeMoments(image);
        using var goldenMoments = Golden(file, "moments");
        AssertClose(goldenMoments, moments, GoldenAtol, GoldenRtol, "moments");

        using var posterior = vae.Encode(image);
        foreach (var (name, actual) in new[] { ("mean", posterior.Mean), ("logvar", posterior.Logvar), ("std", posterior.Std) })
        {
            using var golden = Golden(file, name);
            AssertClose(golden, actual, GoldenAtol, GoldenRtol, name);
        }
    }

    [Fact]
    public void PosteriorSampleDrawsFromTheGivenGenerator()
    {
        using var image = Golden(file, "image");
        using var inference = Autograd.InferenceMode();
        using var posterior = vae.Encode(image);
        using var generator = new Generator(sampleSeed);
        using var sample = posterior.Sample(generator);
        using var golden = Golden(file, "latent_sample");
        AssertClose(golden, sample, GoldenAtol, GoldenRtol, "latent_sample");
    }

    [Fact]
    public void DecoderMatchesDiffusers()
    {
        using var latents = Golden(file, "latents");
        using var inference = Autograd.InferenceMode();
        using var decoded = vae.Decode(latents);
        using var golden = Golden(file, "decoded");
        AssertClose(golden, decoded, GoldenAtol, GoldenRtol, "decoded");

        Assert.Equal(scalingFactor, vae.Config.ScalingFactor);
        using var unscaled = latents / vae.Config.ScalingFactor;
        using var fromScaled = vae.Decode(unscaled);
        using var goldenScaled = Golden(file, "decoded_from_scaled");
        AssertClose(goldenScaled, fromScaled, GoldenAtol, GoldenRtol, "decoded_from_scaled");
    }
}

/// <summary>The tiny SD 1.x VAE (fixtures README, "VAE").</summary>
public sealed class VaeGoldenTests() : VaeGoldenTestsBase(TinySd, "vae_golden.safetensors", 0.18215, 201);

/// <summary>The tiny SDXL VAE (fixtures README, "SDXL": the same architecture, own weights, SDXL's scaling factor).</summary>
public sealed class SdxlVaeGoldenTests() : VaeGoldenTestsBase(TinySdxl, Path.Combine("sdxl", "vae_golden.safetensors"), 0.13025, 241);
