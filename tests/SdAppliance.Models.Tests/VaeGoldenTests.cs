using SdAppliance.Models.Vae;
using SdAppliance.Torch;
using static SdAppliance.Models.Tests.UnetVaeFixtures;

namespace SdAppliance.Models.Tests;

/// <summary>The tiny VAE against diffusers (fixtures README, "VAE").</summary>
public sealed class VaeGoldenTests : IDisposable
{
    private const string File = "vae_golden.safetensors";
    private readonly AutoencoderKL vae = LoadTinyVae();

    public void Dispose() => vae.Dispose();

    [Fact]
    public void EncoderMomentsAndPosteriorMatchDiffusers()
    {
        using var image = Golden(File, "image");
        using var inference = Autograd.InferenceMode();
        using var moments = vae.EncodeMoments(image);
        using var goldenMoments = Golden(File, "moments");
        AssertClose(goldenMoments, moments, GoldenAtol, GoldenRtol, "moments");

        using var posterior = vae.Encode(image);
        foreach (var (name, actual) in new[] { ("mean", posterior.Mean), ("logvar", posterior.Logvar), ("std", posterior.Std) })
        {
            using var golden = Golden(File, name);
            AssertClose(golden, actual, GoldenAtol, GoldenRtol, name);
        }
    }

    [Fact]
    public void PosteriorSampleDrawsFromTheGivenGenerator()
    {
        using var image = Golden(File, "image");
        using var inference = Autograd.InferenceMode();
        using var posterior = vae.Encode(image);
        using var generator = new Generator(201);
        using var sample = posterior.Sample(generator);
        using var golden = Golden(File, "latent_sample");
        AssertClose(golden, sample, GoldenAtol, GoldenRtol, "latent_sample");
    }

    [Fact]
    public void DecoderMatchesDiffusers()
    {
        using var latents = Golden(File, "latents");
        using var inference = Autograd.InferenceMode();
        using var decoded = vae.Decode(latents);
        using var golden = Golden(File, "decoded");
        AssertClose(golden, decoded, GoldenAtol, GoldenRtol, "decoded");

        Assert.Equal(0.18215, vae.Config.ScalingFactor);
        using var unscaled = latents / vae.Config.ScalingFactor;
        using var fromScaled = vae.Decode(unscaled);
        using var goldenScaled = Golden(File, "decoded_from_scaled");
        AssertClose(goldenScaled, fromScaled, GoldenAtol, GoldenRtol, "decoded_from_scaled");
    }
}
