using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;

namespace SdAppliance.Formats.Tests;

public sealed class SafetensorsRoundTripTests : IDisposable
{
    private readonly TempFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    // Distinct bytes per tensor so a mix-up of offsets between tensors cannot go unnoticed.
    private static byte[] Pattern(long length, int seed)
    {
        var bytes = new byte[length];
        for (var i = 0; i < bytes.Length; i++)
            bytes[i] = (byte)(i * 31 + seed * 7 + 1);
        return bytes;
    }

    [Fact]
    public void EveryDTypeRoundTripsWithMetadata()
    {
        var shapes = new long[][] { [2, 3], [5], [], [1, 2, 2], [0, 4] };
        var tensors = new List<SafetensorsTensor>();
        var expected = new Dictionary<string, (SafetensorsDType DType, long[] Shape, byte[] Bytes)>();
        var seed = 0;
        foreach (var dtype in SafetensorsDTypes.All)
        {
            var shape = shapes[seed % shapes.Length];
            dtype.TryByteLength(shape, out var length);
            var bytes = Pattern(length, seed++);
            var name = $"layer.{dtype.ToHeaderName().ToLowerInvariant()}";
            tensors.Add(new SafetensorsTensor(name, dtype, shape, bytes));
            expected[name] = (dtype, shape, bytes);
        }
        var metadata = new Dictionary<string, string> { ["format"] = "pt", ["note"] = "quote \" backslash \\ newline \n tab \t bell \u0007 unicode é猫" };
        var path = _temp.File("all.safetensors");

        SafetensorsFile.Write(path, tensors, metadata);

        using var file = SafetensorsFile.Open(path);
        Assert.Equal(expected.Count, file.Tensors.Count);
        foreach (var entry in file.Tensors)
        {
            var (dtype, shape, bytes) = expected[entry.Name];
            Assert.Equal(dtype, entry.DType);
            Assert.Equal(shape, entry.Shape);
            Assert.Equal(bytes, file.ReadBytes(entry));
            Assert.True(file.GetSpan(entry).SequenceEqual(bytes));
            Assert.Equal(bytes.Length / dtype.ElementSize(), entry.ElementCount);
            // Conforming files keep every tensor aligned to its element size in the file.
            Assert.Equal(0, entry.FileOffset % dtype.ElementSize());
        }
        Assert.Equal(metadata, file.Metadata);
    }

    [Fact]
    public void WrittenBytesFollowTheFormatByHand()
    {
        var a = new byte[] { 1, 2, 3 };
        var b = Pattern(8, 1);
        var path = _temp.File("hand.safetensors");

        SafetensorsFile.Write(path, [
            new SafetensorsTensor("a", SafetensorsDType.U8, [3], a),
            new SafetensorsTensor("b", SafetensorsDType.F32, [2], b),
        ], new Dictionary<string, string> { ["k"] = "v" });

        var raw = File.ReadAllBytes(path);
        var n = BinaryPrimitives.ReadUInt64LittleEndian(raw);
        const string json = """{"__metadata__":{"k":"v"},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"U8","shape":[3],"data_offsets":[8,11]}}""";
        Assert.Equal(0UL, n % 8);
        var header = Encoding.UTF8.GetString(raw, 8, (int)n);
        Assert.Equal(json + new string(' ', (int)n - json.Length), header);
        Assert.True((int)n - json.Length < 8);
        Assert.Equal(8 + (int)n + 11, raw.Length);
        Assert.Equal(b, raw[(8 + (int)n)..(8 + (int)n + 8)]);
        Assert.Equal(a, raw[(8 + (int)n + 8)..]);
    }

    [Theory]
    // The reference implementation's own serialization tests: an F32 tensor holding 0..5, no
    // metadata. "attn.0" [1,2,3] gives a 64-byte header needing no padding; "attn0" [1,1,2,3]
    // gives 65 bytes, padded with 7 spaces to 72.
    [InlineData("attn.0", new long[] { 1, 2, 3 }, 64)]
    [InlineData("attn0", new long[] { 1, 1, 2, 3 }, 72)]
    public void MatchesTheReferenceWritersPublishedBytes(string name, long[] shape, int headerLength)
    {
        var values = MemoryMarshal.AsBytes(new float[] { 0, 1, 2, 3, 4, 5 }.AsSpan()).ToArray();
        var path = _temp.File("reference.safetensors");

        SafetensorsFile.Write(path, [new SafetensorsTensor(name, SafetensorsDType.F32, shape, values)]);

        var json = $"{{\"{name}\":{{\"dtype\":\"F32\",\"shape\":[{string.Join(",", shape)}],\"data_offsets\":[0,24]}}}}";
        byte[] expected = [(byte)headerLength, 0, 0, 0, 0, 0, 0, 0, .. Encoding.ASCII.GetBytes(json.PadRight(headerLength)), .. values];
        Assert.Equal(expected, File.ReadAllBytes(path));
    }

    [Fact]
    public void EmptyFileWithAndWithoutMetadataMatchesTheReference()
    {
        var path = _temp.File("empty.safetensors");

        SafetensorsFile.Write(path, []);
        Assert.Equal([8, 0, 0, 0, 0, 0, 0, 0, .. "{}      "u8], File.ReadAllBytes(path));

        SafetensorsFile.Write(path, [], new Dictionary<string, string> { ["framework"] = "pt" });
        Assert.Equal([40, 0, 0, 0, 0, 0, 0, 0, .. """{"__metadata__":{"framework":"pt"}}     """u8], File.ReadAllBytes(path));

        using var file = SafetensorsFile.Open(path);
        Assert.Empty(file.Tensors);
        Assert.Equal("pt", file.Metadata["framework"]);
    }

    [Fact]
    public void TensorsAreOrderedByReferenceDTypeRankThenName()
    {
        // The reference ranks by its dtype declaration order, not by byte size: I64 before F64,
        // BF16 before F16, F8_E4M3 before F8_E5M2.
        var specs = new (string Name, SafetensorsDType DType)[]
        {
            ("z", SafetensorsDType.F16), ("f64", SafetensorsDType.F64), ("b", SafetensorsDType.I64),
            ("a", SafetensorsDType.I64), ("bf", SafetensorsDType.BF16), ("e5", SafetensorsDType.F8E5M2),
            ("e4", SafetensorsDType.F8E4M3), ("flag", SafetensorsDType.Bool), ("f32", SafetensorsDType.F32),
        };
        var path = _temp.File("order.safetensors");

        SafetensorsFile.Write(path, specs.Select(s => new SafetensorsTensor(s.Name, s.DType, [1], new byte[s.DType.ElementSize()])));

        using var file = SafetensorsFile.Open(path);
        Assert.Equal(["a", "b", "f64", "f32", "bf", "z", "e4", "e5", "flag"], file.Names);
        Assert.Equal(file.Tensors.OrderBy(e => e.DataBegin).Select(e => e.Name), file.Names);
    }

    [Theory]
    [InlineData("unet_golden.safetensors")]
    [InlineData("vae_golden.safetensors")]
    public void RewritingAReferenceFileReproducesItByteForByte(string fixture)
    {
        var source = Path.Combine(AppContext.BaseDirectory, "Fixtures", fixture);
        var copy = _temp.File(fixture);
        using (var file = SafetensorsFile.Open(source))
        {
            // Handed over in reverse order so the writer's own sorting is what is tested.
            SafetensorsFile.Write(copy, file.Tensors.Reverse().Select(e => new SafetensorsTensor(e.Name, e.DType, e.Shape, file.ReadBytes(e))), file.Metadata);
        }
        Assert.Equal(File.ReadAllBytes(source), File.ReadAllBytes(copy));
    }

    [Fact]
    public void CallbackTensorsStreamTheirBytes()
    {
        var big = Pattern(3 * 1024 * 1024 + 4, 3);
        var small = Pattern(6, 4);
        var path = _temp.File("stream.safetensors");

        SafetensorsFile.Write(path, [
            new SafetensorsTensor("big", SafetensorsDType.I32, [big.Length / 4], stream =>
            {
                // In uneven pieces, through both write overloads, as a real exporter might.
                stream.Write(big, 0, 1000);
                stream.WriteByte(big[1000]);
                stream.Write(big.AsSpan(1001));
            }),
            new SafetensorsTensor("small", SafetensorsDType.I16, [3], small),
        ]);

        using var file = SafetensorsFile.Open(path);
        Assert.Equal(big, file.ReadBytes("big"));
        Assert.Equal(small, file.ReadBytes("small"));
    }

    [Fact]
    public void CallbackWritingTheWrongLengthIsRefused()
    {
        var path = _temp.File("short.safetensors");
        var e = Assert.Throws<SafetensorsFormatException>(() => SafetensorsFile.Write(path, [
            new SafetensorsTensor("t", SafetensorsDType.F32, [4], stream => stream.Write(new byte[12])),
        ]));
        Assert.Contains("'t' should be 16 bytes but its callback wrote 12", e.Message);
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void InvalidTensorsAreRefusedBeforeWriting()
    {
        Assert.Throws<ArgumentException>(() => new SafetensorsTensor("t", SafetensorsDType.F32, [2], new byte[7]));
        Assert.Throws<ArgumentException>(() => new SafetensorsTensor("t", SafetensorsDType.F32, [-1], new byte[0]));
        Assert.Throws<ArgumentException>(() => new SafetensorsTensor("t", SafetensorsDType.F32, [long.MaxValue / 2], _ => { }));
        Assert.Throws<ArgumentException>(() => new SafetensorsTensor("__metadata__", SafetensorsDType.U8, [0], new byte[0]));
        var twice = new SafetensorsTensor("t", SafetensorsDType.U8, [1], new byte[1]);
        Assert.Throws<ArgumentException>(() => SafetensorsFile.Write(_temp.File("dup.safetensors"), [twice, twice]));
    }

    [Theory]
    [InlineData("unet")]
    [InlineData("vae")]
    public void FixturesExposeTheManifestsTensors(string model)
    {
        using var file = SafetensorsFile.Open(Path.Combine(AppContext.BaseDirectory, "Fixtures", $"{model}_golden.safetensors"));
        var expected = FixtureManifest.Tensors[model];

        Assert.Equal(expected.Keys.Order(StringComparer.Ordinal), file.Names.Order(StringComparer.Ordinal));
        foreach (var (name, (dtype, shape)) in expected)
        {
            var entry = file[name];
            Assert.Equal(dtype, entry.DType);
            Assert.Equal(shape, entry.Shape);
            Assert.Equal(entry.ByteLength, file.GetSpan(entry).Length);
        }
        Assert.Equal(new Dictionary<string, string> { ["format"] = "pt" }, file.Metadata);
        Assert.Equal(0, file.HeaderLength % 8);
    }

    [Fact]
    public void FixtureValuesAreReadableInPlace()
    {
        // unet "timesteps" is [999, 1] per the manifest's description of how the file was made.
        using var file = SafetensorsFile.Open(Path.Combine(AppContext.BaseDirectory, "Fixtures", "unet_golden.safetensors"));
        Assert.Equal([999L, 1L], MemoryMarshal.Cast<byte, long>(file.GetSpan("timesteps")).ToArray());
        unsafe
        {
            var entry = file["timesteps"];
            Assert.Equal(999L, *(long*)file.GetPointer(entry));
        }
    }

    [Fact]
    public void KeysKeepFileOrderAndLookupsFailClearly()
    {
        using var file = SafetensorsFile.Open(Path.Combine(AppContext.BaseDirectory, "Fixtures", "vae_golden.safetensors"));
        Assert.Equal("decoded", file.Tensors[0].Name);
        Assert.Equal("std", file.Tensors[^1].Name);
        var missing = Assert.Throws<KeyNotFoundException>(() => file["nope"]);
        Assert.Contains("nope", missing.Message);
        Assert.False(file.Contains("nope"));
    }

    [Fact]
    public void SpansAreRefusedAfterDisposeAndForEntriesOfAnotherFile()
    {
        var fixtures = Path.Combine(AppContext.BaseDirectory, "Fixtures");
        using var unet = SafetensorsFile.Open(Path.Combine(fixtures, "unet_golden.safetensors"));
        var vae = SafetensorsFile.Open(Path.Combine(fixtures, "vae_golden.safetensors"));
        var latents = vae["latents"];

        Assert.Throws<ArgumentException>(() => unet.ReadBytes(latents));
        vae.Dispose();
        Assert.Throws<ObjectDisposedException>(() => vae.ReadBytes(latents));
        vae.Dispose();
    }
}
