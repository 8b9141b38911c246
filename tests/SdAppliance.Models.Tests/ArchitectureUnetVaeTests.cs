using System.Text.Json;
using SdAppliance.Models.Unet;
using SdAppliance.Models.Vae;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using static SdAppliance.Models.Tests.UnetVaeFixtures;

namespace SdAppliance.Models.Tests;

/// <summary>
/// The real SD 1.5, SD 2.1 (768-v) and SDXL base UNets and VAEs (and the distilled SSD-1B's and Segmind Vega's UNets), built from their released configs
/// without initialising any weight, have exactly diffusers' state-dict names and shapes, in order
/// (fixtures README, "Real architectures"). Uninitialised CPU tensors are never touched, so even
/// SDXL's 10 GB of float32 costs only address space.
/// </summary>
public sealed class ArchitectureUnetVaeTests
{
    public static TheoryData<string> Models => ["sd15", "sd21v", "sdxl_base"];

    // SSD-1B's and Vega's lists come from their published configs by our generator, which reproduces sdxl_base's reference list first.
    public static TheoryData<string> UnetModels => ["sd15", "sd21v", "sdxl_base", "ssd1b", "vega"];

    private static JsonElement Architecture(string model)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Fixture("architectures", model + ".json")));
        return doc.RootElement.Clone();
    }

    private static List<(string Key, long[] Shape)> Expected(JsonElement arch, string component) =>
        [.. arch.GetProperty("diffusers").GetProperty(component).EnumerateObject()
            .Select(p => (p.Name, p.Value.EnumerateArray().Select(d => d.GetInt64()).ToArray()))];

    private static void AssertSameStateDict(List<(string Key, long[] Shape)> expected, Module model, long expectedParameters)
    {
        using var stateDict = model.StateDict();
        var actual = stateDict.Select(kv => (kv.Key, kv.Value.Shape)).ToList();
        var missing = expected.Select(e => e.Key).Except(actual.Select(a => a.Key)).ToList();
        var extra = actual.Select(a => a.Key).Except(expected.Select(e => e.Key)).ToList();
        Assert.True(missing.Count == 0 && extra.Count == 0,
            $"missing: {string.Join(", ", missing.Take(5))} ({missing.Count}); unexpected: {string.Join(", ", extra.Take(5))} ({extra.Count})");
        for (var i = 0; i < expected.Count; i++)
        {
            Assert.True(expected[i].Key == actual[i].Key, $"entry {i}: expected {expected[i].Key}, got {actual[i].Key}");
            Assert.True(expected[i].Shape.SequenceEqual(actual[i].Shape),
                $"{expected[i].Key}: expected [{string.Join(", ", expected[i].Shape)}], got [{string.Join(", ", actual[i].Shape)}]");
        }
        Assert.Equal(expectedParameters, model.Parameters().Sum(p => p.NumEl));
    }

    [Theory]
    [MemberData(nameof(UnetModels))]
    public void UnetHasDiffusersNamesAndShapes(string model)
    {
        var arch = Architecture(model);
        var config = UNet2DConditionConfig.Parse(arch.GetProperty("configs").GetProperty("unet").GetRawText());
        using (Init.Skip())
        using (var unet = new UNet2DConditionModel(config))
            AssertSameStateDict(Expected(arch, "unet"), unet,
                arch.GetProperty("param_counts").GetProperty("unet").GetProperty("parameters").GetInt64());
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void VaeHasDiffusersNamesAndShapes(string model)
    {
        var arch = Architecture(model);
        var config = AutoencoderKLConfig.Parse(arch.GetProperty("configs").GetProperty("vae").GetRawText());
        using (Init.Skip())
        using (var vae = new AutoencoderKL(config))
            AssertSameStateDict(Expected(arch, "vae"), vae,
                arch.GetProperty("param_counts").GetProperty("vae").GetProperty("parameters").GetInt64());
    }

    [Fact]
    public void SkippedInitialisationDrawsNothing()
    {
        using var generator = new Generator(5);
        var before = generator.GetStateBytes();
        using (Init.Skip())
        using (new UNet2DConditionModel(TinyUnetConfig(), new(Generator: generator))) { }
        Assert.Equal(before, generator.GetStateBytes());
        Assert.False(Init.IsSkipping);

        // Without the scope the same construction initialises every Linear and Conv2d from it.
        using (new UNet2DConditionModel(TinyUnetConfig(), new(Generator: generator))) { }
        Assert.NotEqual(before, generator.GetStateBytes());
    }
}
