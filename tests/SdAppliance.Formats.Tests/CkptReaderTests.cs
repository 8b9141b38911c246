using System.Buffers.Binary;
using System.IO.Compression;
using System.Numerics;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Formats.Pickle;
using static SdAppliance.Formats.Tests.PickleBytes;

namespace SdAppliance.Formats.Tests;

/// <summary>Reading torch checkpoints: the zip format (Python- and libtorch-written), the legacy format, and broken files.</summary>
public sealed class CkptReaderTests : IDisposable
{
    private readonly TempFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    private static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", "pickle", name);

    private static float[] Floats(byte[] bytes) => [.. Enumerable.Range(0, bytes.Length / 4).Select(i => BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(i * 4)))];

    private static float[] Halves(byte[] bytes) => [.. Enumerable.Range(0, bytes.Length / 2).Select(i => (float)BinaryPrimitives.ReadHalfLittleEndian(bytes.AsSpan(i * 2)))];

    private static long[] Longs(byte[] bytes) => [.. Enumerable.Range(0, bytes.Length / 8).Select(i => BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(i * 8)))];

    [Fact]
    public void SdStyleCkptExposesTreeAndTensors()
    {
        using var ckpt = TorchCheckpoint.Open(Fixture("sd-like.ckpt"));
        Assert.Equal(TorchCheckpointFormat.Zip, ckpt.Format);
        Assert.Equal("sd-like", ckpt.ArchiveFolder);
        Assert.False(ckpt.IsBigEndian);

        var root = Assert.IsType<PickleDict>(ckpt.Root);
        Assert.Equal(470000L, root["global_step"]);
        Assert.Equal(6L, root["epoch"]);
        Assert.Equal(1e-4, root["lr"]);
        Assert.Equal("1.4.2", root["pytorch-lightning_version"]);
        var callbacks = Assert.IsType<PickleDict>(root["callbacks"]);
        var modelCheckpoint = new PickleGlobal("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint");
        Assert.Equal("", Assert.IsType<PickleDict>(callbacks[modelCheckpoint])["best_model_path"]);
        var flags = Assert.IsType<PickleDict>(root["flags"]);
        Assert.Equal(BigInteger.Pow(2, 70), flags["big"]);
        Assert.Equal(new PickleTuple(1L, "x"), flags["pair"]);

        var state = ckpt.StateDict();
        Assert.Equal("state_dict", state.Path);
        Assert.Equal(["model.diffusion_model.a.weight", "model.diffusion_model.a_row1", "first_stage_model.b.weight", "cond_stage_model.c.ids"], state.Keys);
        Assert.Equal(1L, Assert.IsType<PickleDict>(Assert.IsType<PickleDict>(root["state_dict"]).Attributes!["_metadata"]).Count);

        // Read out of storage order on purpose: a later storage, then an earlier one, then a view behind it.
        var b = state["first_stage_model.b.weight"];
        Assert.Equal(SafetensorsDType.F16, b.DType);
        Assert.Equal([3L, 2L], b.Shape);
        Assert.Equal([1L, 3L], b.Strides);
        Assert.False(b.IsContiguous);
        Assert.Equal([1f, 4f, 2f, 5f, 3f, 6f], Halves(b.ReadBytes()));

        var a = state["model.diffusion_model.a.weight"];
        Assert.Equal(SafetensorsDType.F32, a.DType);
        Assert.True(a.IsContiguous);
        Assert.Equal([1.5f, -2.25f, 3f, 4f, 0.5f, -6f], Floats(a.ReadBytes()));
        var row = state["model.diffusion_model.a_row1"];
        Assert.Same(a.Storage, row.Storage);
        Assert.Equal(3, row.StorageOffset);
        Assert.Equal([4f, 0.5f, -6f], Floats(row.ReadBytes()));

        var ids = state["cond_stage_model.c.ids"];
        Assert.Equal(SafetensorsDType.I64, ids.DType);
        Assert.Equal([10L, 20L, 1L << 40, -(1L << 62)], Longs(ids.ReadBytes()));
        Assert.Equal(3, ckpt.Storages.Count);
    }

    [Fact]
    public void WriteToStreamsTheSameBytesAsReadBytes()
    {
        using var ckpt = TorchCheckpoint.Open(Fixture("sd-like.ckpt"));
        foreach (var (name, tensor) in ckpt.StateDict())
        {
            using var stream = new MemoryStream();
            tensor.WriteTo(stream);
            Assert.Equal(tensor.ReadBytes(), stream.ToArray());
            Assert.Equal(tensor.ByteLength, stream.Length);
        }
    }

    [Fact]
    public void LegacyFormatWithParameterAndStorageView()
    {
        using var ckpt = TorchCheckpoint.Open(Fixture("legacy.pt"));
        Assert.Equal(TorchCheckpointFormat.Legacy, ckpt.Format);
        Assert.Null(ckpt.ArchiveFolder);
        var state = ckpt.StateDict();
        Assert.Equal("", state.Path);
        Assert.Equal(["linear.weight", "linear.bias"], state.Keys);
        var weight = state["linear.weight"];
        Assert.True(weight.IsParameter);
        Assert.True(weight.RequiresGrad);
        Assert.Equal([2L, 2L], weight.Shape);
        Assert.Equal([0.1f, 0.2f, 0.3f, 0.4f], Floats(weight.ReadBytes()));
        // The bias views elements 2..3 of a 6-element storage.
        var bias = state["linear.bias"];
        Assert.False(bias.IsParameter);
        Assert.Equal([7f, 6f], Floats(bias.ReadBytes()));
    }

    [Fact]
    public void LibtorchWrittenCheckpoint()
    {
        // Written by libtorch 1.13's torch::pickle_save: data descriptors, data.pkl after the data,
        // and dicts wrapped in torch.jit._pickle.restore_type_tag.
        using var ckpt = TorchCheckpoint.Open(Fixture("libtorch-pickle-save.pt"));
        Assert.Equal("archive", ckpt.ArchiveFolder);
        Assert.Equal(470000L, Assert.IsType<PickleDict>(ckpt.Root)["global_step"]);
        var state = ckpt.StateDict();
        Assert.Equal(["w", "h", "i"], state.Keys);
        Assert.Equal([-1f, -0.5f, 0f, 0.5f, 1f, 1.5f], Floats(state["w"].ReadBytes()));
        Assert.False(state["h"].IsContiguous);
        Assert.Equal([0f, 3f, 1f, 4f, 2f, 5f], Halves(state["h"].ReadBytes()));
        Assert.Equal(2, state["i"].StorageOffset);
        Assert.Equal([5L, 1L << 40, 7L, 8L], Longs(state["i"].ReadBytes()));
    }

    [Fact]
    public void TruncatedZipIsRefusedNamingTheFile()
    {
        var bytes = File.ReadAllBytes(Fixture("sd-like.ckpt"));
        var path = _temp.File("truncated.ckpt");
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
        var e = Assert.Throws<CheckpointFormatException>(() => TorchCheckpoint.Open(path).Dispose());
        Assert.Equal(path, e.FilePath);
        Assert.Contains(path, e.Message);
        Assert.Contains("damaged or truncated", e.Problem);
    }

    [Fact]
    public void TruncatedLegacyFileIsRefused()
    {
        var bytes = File.ReadAllBytes(Fixture("legacy.pt"));
        // Cut inside the data of the last storage, then inside the pickles.
        var path = _temp.File("cut.pt");
        File.WriteAllBytes(path, bytes[..^4]);
        Assert.Contains("the file ends inside the data of storage", Assert.Throws<CheckpointFormatException>(() => TorchCheckpoint.Open(path).Dispose()).Problem);
        File.WriteAllBytes(path, bytes[..100]);
        Assert.Contains("truncated", Assert.Throws<CheckpointFormatException>(() => TorchCheckpoint.Open(path).Dispose()).Problem);
    }

    [Fact]
    public void UnknownOpcodeInDataPklIsAFormatError()
    {
        var path = WriteZip(Of(0x80, 2, "}", 0xfe, "."), ("data/0", new byte[4]));
        var e = Assert.Throws<CheckpointFormatException>(() => TorchCheckpoint.Open(path).Dispose());
        Assert.Contains("unknown opcode 0xfe", e.Problem);
        Assert.Contains("archive/data.pkl", e.Problem);
        Assert.IsType<PickleFormatException>(e.InnerException);
    }

    [Theory]
    [InlineData(new byte[0], "the file is empty")]
    [InlineData(new byte[] { (byte)'h', (byte)'e', (byte)'l', (byte)'l', (byte)'o' }, "neither a zip archive nor a pickle (it starts with bytes 68656C6C6F)")]
    [InlineData(new byte[] { 0x80, 2, (byte)'K', 1, (byte)'.' }, "it is a pickle but not a PyTorch checkpoint (the first value is 1")]
    public void NonCheckpointsAreRefused(byte[] contents, string problem)
    {
        var path = _temp.File("file.bin");
        File.WriteAllBytes(path, contents);
        var e = Assert.Throws<CheckpointFormatException>(() => TorchCheckpoint.Open(path).Dispose());
        Assert.Contains(problem, e.Problem);
    }

    [Fact]
    public void SafetensorsAndTarFilesAreRecognised()
    {
        var safetensors = Path.Combine(AppContext.BaseDirectory, "Fixtures", "unet_golden.safetensors");
        Assert.Contains("it is a safetensors file", Assert.Throws<CheckpointFormatException>(() => TorchCheckpoint.Open(safetensors).Dispose()).Problem);
        var tar = new byte[1024];
        "ustar"u8.CopyTo(tar.AsSpan(257));
        var path = _temp.File("old.tar");
        File.WriteAllBytes(path, tar);
        Assert.Contains("tar archive", Assert.Throws<CheckpointFormatException>(() => TorchCheckpoint.Open(path).Dispose()).Problem);
    }

    [Fact]
    public void ZipWithoutDataPklIsRefused()
    {
        var path = _temp.File("other.zip");
        using (var zip = ZipFile.Open(path, ZipArchiveMode.Create))
            zip.CreateEntry("readme.txt");
        Assert.Contains("no <folder>/data.pkl", Assert.Throws<CheckpointFormatException>(() => TorchCheckpoint.Open(path).Dispose()).Problem);
    }

    private static byte[] OneTensorPickle(int numel, int offset, int[] size, int[] stride, string storageType = "FloatStorage") =>
        CheckpointFiles.OneTensorPickle(numel, offset, size, stride, storageType);

    private string WriteZip(byte[] pickle, params (string Name, byte[] Data)[] entries) => CheckpointFiles.WriteZip(_temp, pickle, entries);

    [Fact]
    public void TensorReachingPastItsStorageIsRefused()
    {
        var path = WriteZip(OneTensorPickle(numel: 6, offset: 1, size: [2, 3], stride: [3, 1]), ("data/0", new byte[24]));
        var e = Assert.Throws<CheckpointFormatException>(() => TorchCheckpoint.Open(path).Dispose());
        Assert.Contains("reaches element 6 but storage '0' has 6 elements", e.Problem);
    }

    [Fact]
    public void StorageEntryShorterThanDeclaredIsRefused()
    {
        var path = WriteZip(OneTensorPickle(numel: 10, offset: 0, size: [10], stride: [1]), ("data/0", new byte[8]));
        Assert.Contains("needs 40 bytes (10 x F32) but archive/data/0 holds 8", Assert.Throws<CheckpointFormatException>(() => TorchCheckpoint.Open(path).Dispose()).Problem);
    }

    [Fact]
    public void MissingStorageEntryIsRefused()
    {
        var path = WriteZip(OneTensorPickle(numel: 2, offset: 0, size: [2], stride: [1]));
        Assert.Contains("no archive/data/0 entry", Assert.Throws<CheckpointFormatException>(() => TorchCheckpoint.Open(path).Dispose()).Problem);
    }

    [Fact]
    public void UnsupportedStorageClassIsRefusedAsAGlobal()
    {
        var path = WriteZip(OneTensorPickle(numel: 2, offset: 0, size: [2], stride: [1], storageType: "ComplexFloatStorage"), ("data/0", new byte[16]));
        Assert.Equal("torch.ComplexFloatStorage", Assert.Throws<UnsafePickleException>(() => TorchCheckpoint.Open(path).Dispose()).Global);
    }

    [Fact]
    public void BigEndianArchiveIsSwappedOnRead()
    {
        var data = new byte[8];
        BinaryPrimitives.WriteSingleBigEndian(data, 1.25f);
        BinaryPrimitives.WriteSingleBigEndian(data.AsSpan(4), -3f);
        var path = WriteZip(OneTensorPickle(numel: 2, offset: 0, size: [2], stride: [1]), ("data/0", data), ("byteorder", "big"u8.ToArray()));
        using var ckpt = TorchCheckpoint.Open(path);
        Assert.True(ckpt.IsBigEndian);
        Assert.Equal([1.25f, -3f], Floats(ckpt.StateDict()["w"].ReadBytes()));
    }

    [Fact]
    public void StateDictUnderModelAndNoTensorsAtAll()
    {
        // {"model": {"w": tensor}} is unwrapped; {"x": 1} has no tensors.
        var wrapped = Protocol2("}", Unicode("model"), OneTensorPickle(2, 0, [2], [1])[2..^1], "s");
        using (var ckpt = TorchCheckpoint.Open(WriteZip(wrapped, ("data/0", new byte[8]))))
        {
            var state = ckpt.StateDict();
            Assert.Equal("model", state.Path);
            Assert.Equal(["w"], state.Keys);
        }
        using (var ckpt = TorchCheckpoint.Open(WriteZip(Protocol2("}", Unicode("x"), "K", 1, "s"))))
            Assert.Contains("no dict of tensors", Assert.Throws<CheckpointFormatException>(() => ckpt.StateDict()).Problem);
    }

    [Fact]
    public void TensorsCannotBeReadAfterDispose()
    {
        var ckpt = TorchCheckpoint.Open(Fixture("sd-like.ckpt"));
        var tensor = ckpt.StateDict()["model.diffusion_model.a.weight"];
        ckpt.Dispose();
        Assert.Throws<ObjectDisposedException>(() => tensor.ReadBytes());
    }
}
