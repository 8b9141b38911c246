using System.Buffers.Binary;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Formats.Pickle;

namespace SdAppliance.Formats.Tests;

/// <summary>The torch zip checkpoint writer, checked by reading its files back with our reader and with System.IO.Compression.</summary>
public sealed class CkptWriterTests : IDisposable
{
    private readonly TempFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    private static SafetensorsTensor Tensor(string name, SafetensorsDType dtype, long[] shape, int seed)
    {
        dtype.TryByteLength(shape, out var length);
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return new SafetensorsTensor(name, dtype, shape, bytes);
    }

    private static readonly SafetensorsTensor[] Sample =
    [
        Tensor("model.diffusion_model.input_blocks.0.0.weight", SafetensorsDType.F32, [4, 3, 3, 3], 1),
        Tensor("first_stage_model.decoder.conv_in.bias", SafetensorsDType.F16, [5], 2),
        Tensor("cond_stage_model.transformer.text_model.embeddings.position_ids", SafetensorsDType.I64, [1, 77], 3),
        Tensor("bf16", SafetensorsDType.BF16, [2, 2], 4),
        Tensor("scalar", SafetensorsDType.F64, [], 5),
        Tensor("flags", SafetensorsDType.Bool, [3], 6),
        Tensor("empty", SafetensorsDType.F32, [0, 4], 7),
        Tensor("bytes", SafetensorsDType.U8, [300], 8),
    ];

    private static byte[] Expected(SafetensorsTensor tensor)
    {
        using var stream = new MemoryStream();
        tensor.WriteTo(stream);
        return stream.ToArray();
    }

    private static void AssertRoundTrip(string path, IReadOnlyList<SafetensorsTensor> tensors, string statePath = "state_dict")
    {
        using var ckpt = TorchCheckpoint.Open(path);
        Assert.Equal("archive", ckpt.ArchiveFolder);
        var state = ckpt.StateDict();
        Assert.Equal(statePath, state.Path);
        Assert.Equal(tensors.Select(t => t.Name), state.Keys);
        foreach (var expected in tensors)
        {
            var actual = state[expected.Name];
            Assert.Equal(expected.DType, actual.DType);
            Assert.Equal(expected.Shape, actual.Shape);
            Assert.True(actual.IsContiguous);
            Assert.False(actual.RequiresGrad);
            Assert.Equal(Expected(expected), actual.ReadBytes());
        }
    }

    [Fact]
    public void RoundTripThroughOurReader()
    {
        var path = _temp.File("model.ckpt");
        TorchCheckpointWriter.Write(path, Sample);
        AssertRoundTrip(path, Sample);
        using var ckpt = TorchCheckpoint.Open(path);
        var root = Assert.IsType<PickleDict>(ckpt.Root);
        Assert.Equal(["state_dict"], root.Keys);
        Assert.True(Assert.IsType<PickleDict>(root["state_dict"]).IsOrdered);
    }

    [Fact]
    public void UnwrappedStateDict()
    {
        var path = _temp.File("model.bin");
        TorchCheckpointWriter.Write(path, Sample, wrapInStateDict: false);
        AssertRoundTrip(path, Sample, statePath: "");
    }

    [Fact]
    public void ArchiveHasOnlyTheEntriesA1111Allows()
    {
        var path = _temp.File("model.ckpt");
        TorchCheckpointWriter.Write(path, Sample);
        using var zip = ZipFile.OpenRead(path);
        // AUTOMATIC1111 modules/safe.py refuses any other entry name.
        var allowed = new Regex(@"^([^/]+)/((data/\d+)|version|(data\.pkl))$");
        Assert.All(zip.Entries, e => Assert.Matches(allowed, e.FullName));
        Assert.Equal(["archive/data.pkl", .. Enumerable.Range(0, Sample.Length).Select(i => $"archive/data/{i}"), "archive/version"], zip.Entries.Select(e => e.FullName));
        Assert.All(zip.Entries, e => Assert.Equal(e.Length, e.CompressedLength));
        using var version = new StreamReader(zip.GetEntry("archive/version")!.Open());
        Assert.Equal("3\n", version.ReadToEnd());
    }

    [Fact]
    public void EntryCrcsMatchTheirContent()
    {
        Assert.Equal(0xCBF43926u, Crc32.Append(0, "123456789"u8));
        Assert.Equal(0xCBF43926u, Crc32.Append(Crc32.Append(0, "1234"u8), "56789"u8));
        var path = _temp.File("model.ckpt");
        TorchCheckpointWriter.Write(path, Sample);
        using var zip = ZipFile.OpenRead(path);
        foreach (var entry in zip.Entries)
        {
            using var stream = entry.Open();
            using var content = new MemoryStream();
            stream.CopyTo(content);
            Assert.Equal(entry.Crc32, Crc32.Append(0, content.ToArray()));
        }
    }

    // Walks the local headers from the start of the file: each entry's data must start at a multiple of 64.
    private static List<(string Name, long DataOffset)> LocalEntries(string path)
    {
        var bytes = File.ReadAllBytes(path);
        var entries = new List<(string, long)>();
        var offset = 0;
        while (BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(offset)) == 0x04034b50)
        {
            var nameLength = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(offset + 26));
            var extraLength = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(offset + 28));
            long size = BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(offset + 22));
            if (size == uint.MaxValue)
                size = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(offset + 30 + nameLength + 4));
            var name = Encoding.UTF8.GetString(bytes, offset + 30, nameLength);
            var data = offset + 30 + nameLength + extraLength;
            entries.Add((name, data));
            offset = (int)(data + size);
        }
        return entries;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void DataIsAlignedTo64BytesLikeTorch(bool zip64)
    {
        var path = _temp.File("model.ckpt");
        TorchCheckpointWriter.Write(path, Sample, wrapInStateDict: true, forceZip64: zip64);
        var entries = LocalEntries(path);
        Assert.Equal(Sample.Length + 2, entries.Count);
        Assert.All(entries, e => Assert.Equal(0, e.DataOffset % 64));
    }

    [Fact]
    public void Zip64RecordsAreReadable()
    {
        // The Zip64 path is taken for real only past 4 GiB; forcing it checks the records with a small file.
        var path = _temp.File("model.ckpt");
        TorchCheckpointWriter.Write(path, Sample, wrapInStateDict: true, forceZip64: true);
        AssertRoundTrip(path, Sample);
        using var zip = ZipFile.OpenRead(path);
        Assert.Equal(Sample.Length + 2, zip.Entries.Count);
    }

    [Fact]
    public void SameInputGivesTheSameBytes()
    {
        var first = _temp.File("a.ckpt");
        var second = _temp.File("b.ckpt");
        TorchCheckpointWriter.Write(first, Sample);
        TorchCheckpointWriter.Write(second, Sample);
        Assert.Equal(File.ReadAllBytes(first), File.ReadAllBytes(second));
    }

    // SHA-256 of the files the writer produced before it became a use of TorchSaveWriter: a format
    // change, however harmless to readers, shows here (1001 tensors end on a one-item SETITEMS batch).
    [Theory]
    [InlineData(true, false, 8, "aaadfd4bfab714ba3886e7729ab2b4219297afbec31561e878e83529d7605727")]
    [InlineData(false, false, 8, "f0f8d93ededff0e652e3afdd909c33ff5fbe38e0ef92d1c9aae2d943ce9612cc")]
    [InlineData(true, true, 8, "2de5b33ea175177fa7b7d5bcc03d840efe172a2a8671f69465452bdf37ff430d")]
    [InlineData(true, false, 1001, "e0d56c30d75eec7c996e5750971902e5e9b2eecbde914f2af4a516fbc56a8ac1")]
    [InlineData(false, false, 1, "4543354754c7568d56bdf8b2fca8d9c55e0a5c1dd481dcd53deb3d615132b7d3")]
    [InlineData(true, false, 0, "183c4f5ea351d22d9363a53779bad0b36fd41f2fc936da2ae3960b472c13ec8a")]
    public void BytesAreThoseTheWriterHasAlwaysWritten(bool wrapInStateDict, bool zip64, int count, string sha256)
    {
        var tensors = count == Sample.Length ? Sample : [.. Enumerable.Range(0, count).Select(i => Tensor($"t{i}", SafetensorsDType.F16, [i % 3 + 1], i))];
        var path = _temp.File("model.ckpt");
        TorchCheckpointWriter.Write(path, tensors, wrapInStateDict, zip64);
        Assert.Equal(sha256, Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(path))));
    }

    // The same for the general writer: plain and ordered dicts of one and of several items, a list,
    // a tuple of each length form, numbers of each width, and a tensor met twice.
    [Fact]
    public void TorchSaveWriterBytesAreThoseItHasAlwaysWritten()
    {
        var one = new PickleDict();
        one.Set("*", Sample[0]);
        var ordered = new PickleDict(isOrdered: true);
        ordered.Set("a", Sample[1]);
        ordered.Set("b", Sample[2]);
        var root = new PickleDict();
        root.Set("string_to_param", one);
        root.Set(768L, new PickleTuple(ordered, ordered));
        root.Set("t", new PickleTuple(1L, 2.5, "x", null, true, false));
        root.Set("numbers", new List<object?> { 0L, 255L, 256L, 65536L, -1L, 1L << 40, 0.1f });
        root.Set("single", new List<object?> { "only" });
        root.Set("empty", new PickleDict());
        var path = _temp.File("tree.pt");
        TorchSaveWriter.Write(path, root);
        Assert.Equal("1db6c3f5af0b362bf7c06169356bb92a1ee0c2535d81d6ab8aa9895955236870", Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(path))));
    }

    [Fact]
    public void ManyTensorsSpanSeveralSetItemsBatches()
    {
        var tensors = Enumerable.Range(0, 2500).Select(i => Tensor($"t{i}", SafetensorsDType.F16, [i % 3 + 1], i)).ToList();
        var path = _temp.File("many.ckpt");
        TorchCheckpointWriter.Write(path, tensors);
        AssertRoundTrip(path, tensors);
    }

    [Fact]
    public void StreamedTensorsAndCheckpointTensorsCanBeWritten()
    {
        // A checkpoint's tensors (one of them a strided view) written again through ToSafetensorsTensor.
        var source = Path.Combine(AppContext.BaseDirectory, "Fixtures", "pickle", "sd-like.ckpt");
        using var ckpt = TorchCheckpoint.Open(source);
        var state = ckpt.StateDict();
        var path = _temp.File("copy.ckpt");
        TorchCheckpointWriter.Write(path, state.Select(p => p.Value.ToSafetensorsTensor(p.Key)));
        using var copy = TorchCheckpoint.Open(path);
        foreach (var (name, tensor) in copy.StateDict())
        {
            Assert.Equal(state[name].Shape, tensor.Shape);
            Assert.Equal(state[name].ReadBytes(), tensor.ReadBytes());
        }
    }

    [Fact]
    public void FailedWriteLeavesTheTargetAndNoTemporaryFile()
    {
        var path = _temp.File("model.ckpt");
        File.WriteAllText(path, "previous");
        var failing = new SafetensorsTensor("bad", SafetensorsDType.F32, [4], _ => throw new IOException("disk on fire"));
        Assert.Throws<IOException>(() => TorchCheckpointWriter.Write(path, [Sample[0], failing]));
        var short_ = new SafetensorsTensor("short", SafetensorsDType.F32, [4], s => s.Write(new byte[15]));
        Assert.Contains("should be 16 bytes but 15 were written", Assert.Throws<InvalidOperationException>(() => TorchCheckpointWriter.Write(path, [short_])).Message);
        Assert.Equal("previous", File.ReadAllText(path));
        Assert.Equal([path], Directory.GetFiles(_temp.Path));
    }

    [Fact]
    public void DuplicateNamesAreRefused()
    {
        var path = _temp.File("model.ckpt");
        Assert.Throws<ArgumentException>(() => TorchCheckpointWriter.Write(path, [Sample[0], Sample[0]]));
        Assert.False(File.Exists(path));
    }
}
