using SdAppliance.Formats;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.Unet;
using SdAppliance.Models.Vae;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using SdAppliance.Torch.Serialization;
using static SdAppliance.Models.Tests.UnetVaeFixtures;

namespace SdAppliance.Models.Tests;

/// <summary>
/// The fixture weights are PyTorch's default initialisation after <c>manual_seed(0)</c> (UNet) and
/// <c>manual_seed(1)</c> (VAE), with only the norm layers perturbed afterwards (fixtures README).
/// Building our modules from a generator with the same seed must give every Linear and Conv2d
/// weight bit for bit: proof that the layers are created in diffusers' order with PyTorch's shapes
/// and initialisers, so a seeded from-scratch model here starts where diffusers' would.
/// </summary>
public sealed class UnetVaeInitTests
{
    private static void AssertSeededWeightsMatch(Module model, string weightsFile)
    {
        using var reader = TensorFile.Open(Fixture(weightsFile));
        using var stateDict = model.StateDict();
        var compared = 0;
        foreach (var (key, value) in stateDict)
        {
            // Norm weights and biases were perturbed after initialisation; they cannot match.
            if (key.Contains("norm", StringComparison.Ordinal)) continue;
            using var expected = reader.ReadTensor(key);
            Assert.True(expected.Allclose(value, 0, 0), $"{key} differs from PyTorch's seeded initialisation");
            compared++;
        }
        Assert.True(compared > 100, $"only {compared} tensors compared");
    }

    [Fact]
    public void SeededUnetInitialisesLikePyTorch()
    {
        using var generator = new Generator(0);
        using var unet = new UNet2DConditionModel(TinyUnetConfig(), new ModuleOptions(Generator: generator));
        AssertSeededWeightsMatch(unet, Path.Combine("tiny-sd", "unet", "diffusion_pytorch_model.safetensors"));
    }

    [Fact]
    public void SeededVaeInitialisesLikePyTorch()
    {
        using var generator = new Generator(1);
        using var vae = new AutoencoderKL(TinyVaeConfig(), new ModuleOptions(Generator: generator));
        AssertSeededWeightsMatch(vae, Path.Combine("tiny-sd", "vae", "diffusion_pytorch_model.safetensors"));
    }
}
