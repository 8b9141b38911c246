using SdAppliance.Formats;
using SdAppliance.Torch.Serialization;

namespace SdAppliance.Torch.Tests;

public sealed class SafetensorsTorchTests : IDisposable
{
    private readonly string folder = Directory.CreateTempSubdirectory("sdapp-st-").FullName;

    public void Dispose() => Directory.Delete(folder, recursive: true);

    [Fact]
    public void EveryDTypeRoundTripsWithMetadata()
    {
        var path = Path.Combine(folder, "all.safetensors");
        using var scope = torch.NewDisposeScope();
        var source = torch.Arange(-6, 6, 1, DType.Float32).Reshape(3, 4);
        var dtypes = new[] { DType.Float32, DType.Float64, DType.Float16, DType.BFloat16, DType.Int64, DType.Int32, DType.Int16, DType.Int8, DType.Bool };
        var tensors = dtypes.ToDictionary(d => d.TorchName(), d => source.To(d));
        tensors["uint8"] = (source + 6).To(DType.UInt8);
        TensorFiles.Save(path, tensors, new Dictionary<string, string> { ["format"] = "pt", ["ss_network_dim"] = "16" });

        using var reader = TensorFile.Open(path);
        Assert.Equal("16", reader.Metadata["ss_network_dim"]);
        foreach (var (name, expected) in tensors)
        {
            var loaded = reader.ReadTensor(name);
            Assert.Equal(expected.DType, loaded.DType);
            Assert.Equal(expected.Shape, loaded.Shape);
            Assert.Equal(expected.ToBytes(), loaded.ToBytes());
        }
    }

    [Fact]
    public void LoadedTensorsShareTheMapAndOutliveTheReader()
    {
        var path = Path.Combine(folder, "w.safetensors");
        using (var w = torch.Tensor([1f, 2f, 3f, 4f], 2, 2))
            TensorFiles.Save(path, [new("w", w)]);
        var original = File.ReadAllBytes(path);

        Tensor t;
        using (var reader = TensorFile.Open(path))
            t = reader.ReadTensor("w");
        // Still readable after the reader is gone: the tensor keeps the mapping alive.
        Assert.Equal([1f, 2f, 3f, 4f], t.ToArray<float>());
        // Writable in place (optimizers, load_state_dict targets) without touching the file.
        t.Mul_(10);
        Assert.Equal([10f, 20f, 30f, 40f], t.ToArray<float>());
        t.Dispose();
        Assert.Equal(original, File.ReadAllBytes(path));
    }

    [Fact]
    public void GpuOrNonContiguousTensorsAreWrittenContiguously()
    {
        var path = Path.Combine(folder, "t.safetensors");
        using var scope = torch.NewDisposeScope();
        var m = torch.Tensor([1f, 2f, 3f, 4f, 5f, 6f], 2, 3);
        var transposed = m.T();
        Assert.False(transposed.IsContiguous);
        TensorFiles.Save(path, [new("t", transposed)]);
        var loaded = TensorFiles.Load(path)["t"];
        Assert.Equal([3L, 2L], loaded.Shape);
        Assert.Equal([1f, 4f, 2f, 5f, 3f, 6f], loaded.ToArray<float>());
    }

    [Fact]
    public void Float8IsReadAsItsExactValues()
    {
        // e4m3fn: 0x38 = 1.0, 0x40 = 2.0, 0xB8 = -1.0, 0x01 = 2^-9 (smallest subnormal), 0x7E = 448 (max).
        // e5m2:   0x3C = 1.0, 0x7C = +inf, 0x01 = 2^-16.
        var path = Path.Combine(folder, "f8.safetensors");
        SafetensorsFile.Write(path,
        [
            new SafetensorsTensor("a", SafetensorsDType.F8E4M3, [5], new byte[] { 0x38, 0x40, 0xB8, 0x01, 0x7E }),
            new SafetensorsTensor("b", SafetensorsDType.F8E5M2, [3], new byte[] { 0x3C, 0x7C, 0x01 }),
        ]);
        using var reader = TensorFile.Open(path);
        using var a = reader.ReadTensor("a");
        using var af = a.To(DType.Float32);
        Assert.Equal([1f, 2f, -1f, MathF.Pow(2, -9), 448f], af.ToArray<float>());
        using var b = reader.ReadTensor("b");
        using var bf = b.To(DType.Float32);
        Assert.Equal([1f, float.PositiveInfinity, MathF.Pow(2, -16)], bf.ToArray<float>());
    }

    [Fact]
    public void UnsignedWideTypesAreRefusedWithTheTensorName()
    {
        var path = Path.Combine(folder, "u16.safetensors");
        SafetensorsFile.Write(path, [new SafetensorsTensor("ids", SafetensorsDType.U16, [2], new byte[4])]);
        using var reader = TensorFile.Open(path);
        var e = Assert.Throws<SafetensorsFormatException>(() => reader.ReadTensor("ids"));
        Assert.Contains("'ids'", e.Message);
        Assert.Contains("U16", e.Message);
    }
}
