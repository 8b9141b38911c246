using System.Text.Json;

namespace SdAppliance.Cli.Tests;

public class ModelConfigTests
{
    private static string ConfigsDirectory()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "SdAppliance.sln")))
                return Path.Combine(dir.FullName, "models", "configs");
        }

        throw new InvalidOperationException("SdAppliance.sln not found above " + AppContext.BaseDirectory);
    }

    [Theory]
    [InlineData("sd15/unet/config.json")]
    [InlineData("sd15/vae/config.json")]
    [InlineData("sd15/text_encoder/config.json")]
    [InlineData("sd21v/unet/config.json")]
    [InlineData("sd21v/vae/config.json")]
    [InlineData("sd21v/text_encoder/config.json")]
    [InlineData("sdxl_base/unet/config.json")]
    [InlineData("sdxl_base/vae/config.json")]
    [InlineData("sdxl_base/text_encoder/config.json")]
    [InlineData("sdxl_base/text_encoder_2/config.json")]
    public void ExpectedComponentConfigExists(string relative)
    {
        Assert.True(File.Exists(Path.Combine(ConfigsDirectory(), relative)), relative);
    }

    [Fact]
    public void EveryConfigParsesAsAJsonObject()
    {
        var files = Directory.GetFiles(ConfigsDirectory(), "*.json", SearchOption.AllDirectories);

        Assert.NotEmpty(files);
        foreach (var file in files)
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(file));
            Assert.True(doc.RootElement.ValueKind == JsonValueKind.Object, file);
        }
    }

    [Fact]
    public void Sd15UnetHasTheReleasedChannelWidths()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(ConfigsDirectory(), "sd15", "unet", "config.json")));
        var root = doc.RootElement;

        var channels = root.GetProperty("block_out_channels").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        Assert.Equal([320, 640, 1280, 1280], channels);
        Assert.Equal(768, root.GetProperty("cross_attention_dim").GetInt32());
        Assert.Equal("UNet2DConditionModel", root.GetProperty("_class_name").GetString());
    }
}
