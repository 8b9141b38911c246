using System.Security.Cryptography;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Training.Networks;

namespace SdAppliance.Training.Tests;

/// <summary>kohya's minimum <c>ss_*</c> metadata and the addnet hashes (FORMATS §4.2).</summary>
public sealed class LoraMetadataTests
{
    [Theory]
    [InlineData(ModelFamily.V1, false, "False", "sd_v1")]
    [InlineData(ModelFamily.V2, false, "True", "sd_v2")]
    [InlineData(ModelFamily.V2, true, "True", "sd_v2_v")]
    [InlineData(ModelFamily.XlBase, false, "False", "sdxl_base_v1-0")]
    public void MinimumKeysAreKohyasStrings(ModelFamily family, bool v, string v2, string version)
    {
        var metadata = KohyaMetadata.Build(family, v, new LoraNetworkOptions(NetworkDim: 16, NetworkAlpha: 8));
        Assert.Equal(v2, metadata["ss_v2"]);
        Assert.Equal(version, metadata["ss_base_model_version"]);
        Assert.Equal("networks.lora", metadata["ss_network_module"]);
        Assert.Equal("16", metadata["ss_network_dim"]);
        Assert.Equal("8.0", metadata["ss_network_alpha"]);  // argparse gives a float; str(8.0)
        // kohya writes ss_network_args only when --network_args were given.
        Assert.False(metadata.ContainsKey("ss_network_args"));
        Assert.False(metadata.ContainsKey("ss_network_dropout"));

        var locon = KohyaMetadata.Build(family, v, new LoraNetworkOptions(NetworkAlpha: 0.5, Dropout: 0.1, ConvDim: 4));
        Assert.Equal("{\"conv_dim\": \"4\", \"conv_alpha\": \"1\"}", locon["ss_network_args"]);
        Assert.Equal("0.5", locon["ss_network_alpha"]);
        Assert.Equal("0.1", locon["ss_network_dropout"]);
    }

    [Theory]
    [InlineData(8.0, "8.0")]
    [InlineData(-3.0, "-3.0")]
    [InlineData(0.0001, "0.0001")]
    [InlineData(0.00001, "1e-05")]
    [InlineData(0.000015, "1.5e-05")]
    [InlineData(1e16, "1e+16")]
    [InlineData(0.1, "0.1")]
    [InlineData(123.25, "123.25")]
    public void FloatsPrintAsPythonPrintsThem(double value, string python) => Assert.Equal(python, KohyaMetadata.PythonFloat(value));

    [Fact]
    public void AddnetHashesCoverThePayloadAndTheLegacyWindow()
    {
        // A fake safetensors file: 8-byte length 16, a 16-byte header, then 2 MiB of payload.
        var payload = new byte[2 << 20];
        new Random(1).NextBytes(payload);
        var file = new byte[8 + 16 + payload.Length];
        file[0] = 16;
        payload.CopyTo(file, 24);
        using var stream = new MemoryStream(file);
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(payload)), KohyaMetadata.AddnetModelHash(stream));
        var window = file.AsSpan(0x100000, 0x10000).ToArray();
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(window))[..8], KohyaMetadata.AddnetLegacyHash(stream));
    }
}
