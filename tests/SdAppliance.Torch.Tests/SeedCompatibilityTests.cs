using SdAppliance.Formats;
using SdAppliance.Torch.Serialization;

namespace SdAppliance.Torch.Tests;

/// <summary>
/// The seed contract: on CPU, the same seed draws exactly the numbers PyTorch drew for the
/// reference goldens (tests/fixtures/README.md says how each was made).
/// </summary>
public class SeedCompatibilityTests
{
    private static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", name);

    [Fact]
    public void RandnReproducesTheUnetGoldenInputsBitForBit()
    {
        using var golden = TensorFile.Open(Fixture("unet_golden.safetensors"));
        using var g = new Generator(100);
        using var latents = torch.Randn([2, 4, 8, 8], g);
        using var hidden = torch.Randn([2, 77, 32], g);
        using var expectedLatents = golden.ReadTensor("latents");
        using var expectedHidden = golden.ReadTensor("encoder_hidden_states_random");
        Assert.Equal(expectedLatents.ToArray<float>(), latents.ToArray<float>());
        Assert.Equal(expectedHidden.ToArray<float>(), hidden.ToArray<float>());
    }

    [Fact]
    public void RandAndRandnReproduceTheVaeGoldenInputs()
    {
        using var golden = TensorFile.Open(Fixture("vae_golden.safetensors"));
        using var g = new Generator(200);
        using var scope = torch.NewDisposeScope();
        var image = torch.Rand([1, 3, 64, 64], g) * 2 - 1;
        var latents = torch.Randn([1, 4, 8, 8], g);
        Assert.Equal(golden.ReadTensor("image").ToArray<float>(), image.ToArray<float>());
        Assert.Equal(golden.ReadTensor("latents").ToArray<float>(), latents.ToArray<float>());

        // latent_sample = mean + std * randn(mean.shape, Generator().manual_seed(201)): one fused
        // multiply-add in float32 either side, so at most one rounding step apart (|x| < 8 here).
        var mean = golden.ReadTensor("mean");
        var sample = mean + golden.ReadTensor("std") * torch.Randn(mean.Shape, new Generator(201));
        var expected = golden.ReadTensor("latent_sample").ToArray<float>();
        var actual = sample.ToArray<float>();
        for (var i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-6 * Math.Max(1, Math.Abs(expected[i])), $"element {i}: {actual[i]} vs {expected[i]}");
    }
}
