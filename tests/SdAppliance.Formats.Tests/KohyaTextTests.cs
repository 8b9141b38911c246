using SdAppliance.Formats.Hashing;
using System.Collections.Specialized;
using System.Security.Cryptography;
using SdAppliance.Formats.Adapters;

namespace SdAppliance.Formats.Tests;

/// <summary>Values as Python writes them and the addnet hashes, as kohya writes them into LoRA metadata (FORMATS §4.2).</summary>
public sealed class KohyaTextTests
{
    [Theory]
    [InlineData(8.0, "8.0")]
    [InlineData(-3.0, "-3.0")]
    [InlineData(0.0001, "0.0001")]
    [InlineData(0.00001, "1e-05")]
    [InlineData(0.000015, "1.5e-05")]
    [InlineData(1e16, "1e+16")]
    [InlineData(0.1, "0.1")]
    [InlineData(123.25, "123.25")]
    public void FloatsPrintAsPythonPrintsThem(double value, string python) => Assert.Equal(python, PythonText.Float(value));

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
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(payload)), FileHashes.AddNetSha256(stream, "payload"));
        var window = file.AsSpan(0x100000, 0x10000).ToArray();
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(window))[..8], FileHashes.LegacyModelHash(stream));
    }

    [Fact]
    public void JsonIsPythonsJsonDumpsWithItsDefaults()
    {
        var value = new OrderedDictionary
        {
            ["3_cube"] = new OrderedDictionary { ["n_repeats"] = 3, ["ratio"] = 0.5 },
            ["é\"\n"] = new object?[] { 1L, true, null, 1e-05 },
        };
        // ", " and ": " separators, non-ASCII escaped (ensure_ascii), floats as repr.
        Assert.Equal("{\"3_cube\": {\"n_repeats\": 3, \"ratio\": 0.5}, \"\\u00e9\\\"\\n\": [1, true, null, 1e-05]}", PythonText.Json(value));
        Assert.Equal("\"é\\\"\"", PythonText.JsonString("é\"", ensureAscii: false));
    }
}
