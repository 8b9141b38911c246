using System.Text.Json;
using SdAppliance.Models.Unet;
using SdAppliance.Models.Vae;
using static SdAppliance.Models.Tests.UnetVaeFixtures;

namespace SdAppliance.Models.Tests;

/// <summary>Reading diffusers' UNet and VAE config.json files, and diffusers' per-block rules.</summary>
public sealed class UnetConfigTests
{
    private static string ConfigJson(string model, string component)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Fixture("architectures", model + ".json")));
        return doc.RootElement.GetProperty("configs").GetProperty(component).GetRawText();
    }

    [Fact]
    public void Sd15AttentionHeadDimIsTheNumberOfHeads()
    {
        var config = UNet2DConditionConfig.Parse(ConfigJson("sd15", "unet"));
        // SD 1.5's config predates most keys: diffusers' defaults fill them.
        Assert.Equal("UNetMidBlock2DCrossAttn", config.MidBlockType);
        Assert.Null(config.AdditionEmbedType);
        Assert.False(config.UpcastAttention ?? false);
        Assert.Equal([8, 8, 8, 8], config.HeadsPerBlock);
        Assert.Equal([768, 768, 768, 768], config.CrossAttentionDimPerBlock);
        Assert.Equal([2, 2, 2, 2], config.LayersPerBlockList);
        Assert.Equal(1280, config.TimeEmbedDim);
    }

    [Fact]
    public void Sd21HeadsPerBlockComeFromTheList()
    {
        var config = UNet2DConditionConfig.Parse(ConfigJson("sd21v", "unet"));
        Assert.Equal([5, 10, 20, 20], config.HeadsPerBlock);
        Assert.True(config.UseLinearProjection);
        Assert.True(config.UpcastAttention);
    }

    [Fact]
    public void SdxlHasTextTimeEmbeddingAndPerLevelTransformerDepth()
    {
        var config = UNet2DConditionConfig.Parse(ConfigJson("sdxl_base", "unet"));
        Assert.Equal("text_time", config.AdditionEmbedType);
        Assert.Equal(256, config.AdditionTimeEmbedDim);
        Assert.Equal(2816, config.ProjectionClassEmbeddingsInputDim);
        Assert.Equal([[1, 1], [2, 2], [10, 10]], config.DownTransformerDepths);
        Assert.Equal([[10, 10, 10], [2, 2, 2], [1, 1, 1]], config.UpTransformerDepths);
        Assert.Equal(10, config.MidTransformerDepth);
        Assert.Equal([5, 10, 20], config.HeadsPerBlock);
        Assert.Null(config.UpcastAttention);  // JSON null: off, as in diffusers
        Assert.Equal(["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], config.DownBlockTypes);
    }

    [Fact]
    public void NumAttentionHeadsWinsOverAttentionHeadDim()
    {
        var config = UNet2DConditionConfig.Parse("""{"block_out_channels": [32, 64], "attention_head_dim": 8, "num_attention_heads": [2, 4]}""");
        Assert.Equal([2, 4], config.HeadsPerBlock);
    }

    [Fact]
    public void PerBlockListsOfTheWrongLengthAreRejected()
    {
        var config = UNet2DConditionConfig.Parse("""{"block_out_channels": [32, 64], "attention_head_dim": [1, 2, 3]}""");
        Assert.Throws<ArgumentException>(() => config.HeadsPerBlock);
    }

    [Theory]
    [InlineData("""{"class_embed_type": "timestep"}""", "class embedding")]
    [InlineData("""{"addition_embed_type": "text"}""", "addition_embed_type")]
    [InlineData("""{"down_block_types": ["AttnDownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D"]}""", "AttnDownBlock2D")]
    [InlineData("""{"resnet_time_scale_shift": "scale_shift"}""", "scale_shift")]
    [InlineData("""{"encoder_hid_dim": 768}""", "encoder_hid_dim")]
    public void UnsupportedFeaturesFailAtConstruction(string json, string named)
    {
        var config = UNet2DConditionConfig.Parse(json);
        var e = Assert.Throws<NotSupportedException>(config.Validate);
        Assert.Contains(named, e.Message);
    }

    [Fact]
    public void UnknownKeysAreIgnoredAndTheConfigRoundTrips()
    {
        var original = UNet2DConditionConfig.Parse("""{"_class_name": "UNet2DConditionModel", "some_future_key": {"a": 1}, "attention_head_dim": [5, 10, 20, 20], "sample_size": 96}""");
        var json = original.ToJson();
        Assert.Contains("\"attention_head_dim\": [", json);
        Assert.Contains("\"sample_size\": 96", json);
        Assert.DoesNotContain("heads_per_block", json);
        var again = UNet2DConditionConfig.Parse(json);
        Assert.Equal(original.HeadsPerBlock, again.HeadsPerBlock);
        Assert.Equal(original.BlockOutChannels, again.BlockOutChannels);
        Assert.Equal(original.SampleSize, again.SampleSize);
    }

    [Theory]
    [InlineData("sd15", 0.18215, 512)]
    [InlineData("sd21v", 0.18215, 768)]
    [InlineData("sdxl_base", 0.13025, 1024)]
    public void VaeScalingFactorDefaultsAsInDiffusers(string model, double scaling, int sampleSize)
    {
        var config = AutoencoderKLConfig.Parse(ConfigJson(model, "vae"));
        Assert.Equal(scaling, config.ScalingFactor);
        Assert.Equal(sampleSize, config.SampleSize[0]);
        Assert.Equal(8, config.DownscaleFactor);
        Assert.True(config.ForceUpcast);
    }
}
