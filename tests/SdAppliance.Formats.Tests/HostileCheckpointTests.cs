using System.IO.Compression;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Formats.Pickle;
using static SdAppliance.Formats.Tests.CheckpointFiles;
using static SdAppliance.Formats.Tests.PickleBytes;

namespace SdAppliance.Formats.Tests;

/// <summary>
/// Checkpoints built to crash or exhaust their reader: values nested 100,000 deep (which would overflow the
/// stack of any recursive reader and kill the process), views that expand a few bytes into gigabytes, and
/// entries that inflate like a zip bomb. Each is refused with a <see cref="UserInputException"/> that names
/// the file, before the memory it claims is taken.
/// </summary>
public sealed class HostileCheckpointTests : IDisposable
{
    private const int Deep = 100_000;

    private readonly TempFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    private static byte[] Repeat(string op, int count) => Of([.. Enumerable.Repeat((object)op, count)]);

    private static byte[] Repeat(byte[] bytes, int count) => [.. Enumerable.Repeat(bytes, count).SelectMany(b => b)];

    // Each builds a value nested `depth` containers deep, bottom-up through the opcodes that nest.
    public static TheoryData<string> Shapes() => ["tuple1", "tuple-mark", "list-mark", "dict-value", "dict-key", "set-item", "ordered-dict", "list-top-down", "object-state"];

    private static byte[] Nested(string shape, int depth) => shape switch
    {
        // N, (N,), ((N,),) ...
        "tuple1" => Protocol2("N", Repeat(new byte[] { 0x85 }, depth)),
        "tuple-mark" => Protocol2(Repeat("(", depth), "N", Repeat("t", depth)),
        "list-mark" => Protocol2(Repeat("(", depth), "N", Repeat("l", depth)),
        // {1: {1: ... {1: None}}}
        "dict-value" => Protocol2(Repeat(Of("(", "K", 1), depth), "N", Repeat("d", depth)),
        // {((...(None,)...),): 1}: the hostile key is hashed when it is set
        "dict-key" => Protocol2("}", "N", Repeat(new byte[] { 0x85 }, depth - 1), "K", 1, "s"),
        // frozenset({frozenset({...})}) (protocol 4)
        "set-item" => Of(0x80, 4, Repeat("(", depth), "N", Repeat(new byte[] { 0x91 }, depth), "."),
        // OrderedDict([(1, OrderedDict([(1, ...)]))]), each level a call of an allowed class
        "ordered-dict" => Protocol2(Repeat(Of(Global("collections", "OrderedDict"), "(", "(", "K", 1), depth), "N", Repeat(Of("t", "l", 0x85, "R"), depth)),
        // A list appended into the list before it, through the memo: the nesting grows at the bottom, after its parents exist.
        "list-top-down" => Of(0x80, 4, "]", 0x94,
            Of([.. Enumerable.Range(1, depth - 1).Select(i => (object)Of("j", Int32(i - 1), "]", 0x94, "a", "0"))]), "."),
        // A Lightning ModelCheckpoint (an opaque class, kept with its empty arguments tuple) whose state holds the next one.
        "object-state" => Protocol2(Repeat(Of(Global("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"), ")", 0x81), depth - 1), "N",
            Repeat("b", depth - 1)),
        _ => throw new ArgumentException(shape),
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void NestingUpToTheLimitIsRead(string shape)
    {
        TorchCheckpoint.Open(WriteZip(_temp, Nested(shape, PickleNesting.MaxDepth))).Dispose();
        var e = Assert.Throws<CheckpointFormatException>(() => TorchCheckpoint.Open(WriteZip(_temp, Nested(shape, PickleNesting.MaxDepth + 1))).Dispose());
        Assert.Contains($"nest more than {PickleNesting.MaxDepth} levels deep", e.Problem);
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void ValuesNested100000DeepAreRefusedNamingTheFile(string shape)
    {
        var path = WriteZip(_temp, Nested(shape, Deep));
        var e = Assert.Throws<CheckpointFormatException>(() => TorchCheckpoint.Open(path).Dispose());
        Assert.Equal(path, e.Subject);
        Assert.Contains(path, e.Message);
        Assert.Contains("archive/data.pkl", e.Problem);
        Assert.Contains("levels deep", e.Problem);
    }

    [Fact]
    public void ListThatContainsItselfIsNotMistakenForDeepNesting()
    {
        // l = []; l.append(l): the memo lets a list hold itself; it is one level deep.
        var value = Assert.IsType<List<object?>>(Unpickler.Load(Of(0x80, 4, "]", 0x94, "j", Int32(0), "a", ".")));
        Assert.Same(value, value[0]);
    }

    [Fact]
    public void DeepPersistentIdIsRefusedNamingTheFile()
    {
        // The persistent id (normally ('storage', type, key, location, numel)) is a tuple nested 100,000 deep.
        var path = WriteZip(_temp, Protocol2("}", Unicode("w"), "N", Repeat(new byte[] { 0x85 }, Deep), "Q", "s"));
        var e = Assert.Throws<CheckpointFormatException>(() => TorchCheckpoint.Open(path).Dispose());
        Assert.Equal(path, e.Subject);
        Assert.Contains("persistent id (((<tuple of 1>,),),) is not a storage reference", e.Problem);
    }

    [Fact]
    public void DeepRebuildArgumentsAreRefusedNamingTheFile()
    {
        // _rebuild_from_type_v2(<100,000-deep tuple>, torch.Tensor, (), {}): its function is checked and named in the message.
        var path = WriteZip(_temp, Protocol2("}", Unicode("w"), Global("torch._tensor", "_rebuild_from_type_v2"),
            "(", "N", Repeat(new byte[] { 0x85 }, Deep), Global("torch", "Tensor"), ")", "}", "t", "R", "s"));
        var e = Assert.Throws<CheckpointFormatException>(() => TorchCheckpoint.Open(path).Dispose());
        Assert.Equal(path, e.Subject);
        Assert.Contains("_rebuild_from_type_v2 may only call a torch rebuild function, not (((<tuple of 1>,),),)", e.Problem);
    }

    [Fact]
    public void DeepTupleAsTensorSizeIsRefusedNamingTheFile()
    {
        var size = Of("N", Repeat(new byte[] { 0x85 }, Deep), 0x85);
        var pickle = Protocol2("}", Unicode("w"), Global("torch._utils", "_rebuild_tensor_v2"), "(",
            "(", Unicode("storage"), Global("torch", "FloatStorage"), Unicode("0"), Unicode("cpu"), BinInt(1), "t", "Q",
            BinInt(0), size, ")", 0x89, "}", "t", "R", "s");
        var path = WriteZip(_temp, pickle, ("data/0", new byte[4]));
        var e = Assert.Throws<CheckpointFormatException>(() => TorchCheckpoint.Open(path).Dispose());
        Assert.Equal(path, e.Subject);
        Assert.Contains("the _rebuild_tensor_v2 size holds a tuple, not an integer", e.Problem);
    }

    public static TheoryData<int[], int[], int> ExpandingViews() => new()
    {
        // An expanded scalar: 4 bytes in the file, 4 GB when read.
        { [1 << 30], [0], 1 },
        // A row repeated: torch.ones(1, 1024).expand(1 << 20, 1024).
        { [1 << 20, 1024], [0, 1], 1024 },
        // Overlapping strides: each row starts one element after the last.
        { [1 << 16, 1 << 16], [1, 1], (1 << 17) - 1 },
    };

    [Theory]
    [MemberData(nameof(ExpandingViews))]
    public void ViewThatExpandsItsStorageIsRefusedBeforeItIsRead(int[] size, int[] stride, int numel)
    {
        var path = WriteZip(_temp, OneTensorPickle(numel, 0, size, stride), ("data/0", new byte[numel * 4]));
        var before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<CheckpointFormatException>(() => TorchCheckpoint.Open(path).Dispose());
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(path, e.Subject);
        Assert.Contains($"the view (size [{string.Join(", ", size)}], stride [{string.Join(", ", stride)}]) repeats elements", e.Problem);
        Assert.Contains($"would expand the {numel * 4} bytes of storage '0'", e.Problem);
        // Reading the header and the storage entry's size costs kilobytes; 64 MiB is far below what the view claims (4 GiB and up).
        Assert.True(allocated < 64 << 20, $"{allocated} bytes allocated before the refusal");
    }

    [Fact]
    public void ZipBombPickleIsRefusedFromItsHeader()
    {
        // A data.pkl of 64 MiB of zeros deflates to about 64 KiB: a 1,000:1 bomb.
        var pickle = new byte[64 << 20];
        var path = WriteZip(_temp, CompressionLevel.SmallestSize, pickle);
        Assert.True(new FileInfo(path).Length < 1 << 20);
        var before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<CheckpointFormatException>(() => TorchCheckpoint.Open(path).Dispose());
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 16 << 20, "the pickle was inflated before the refusal");
        Assert.Equal(path, e.Subject);
        Assert.Contains("archive/data.pkl declares 67108864 bytes compressed into", e.Problem);
        Assert.Contains("zip bomb", e.Problem);
    }

    [Fact]
    public void ZipBombStorageIsRefusedFromItsHeader()
    {
        const int numel = 16 << 20;
        var path = WriteZip(_temp, CompressionLevel.SmallestSize, OneTensorPickle(numel, 0, [numel], [1]), ("data/0", new byte[numel * 4]));
        var e = Assert.Throws<CheckpointFormatException>(() => TorchCheckpoint.Open(path).Dispose());
        Assert.Equal(path, e.Subject);
        Assert.Contains("archive/data/0 declares 67108864 bytes compressed into", e.Problem);
    }

    [Fact]
    public void RecompressedSmallCheckpointIsStillRead()
    {
        // Deflated entries below the bomb threshold are a zip tool's doing, not an attack.
        var path = WriteZip(_temp, CompressionLevel.SmallestSize, OneTensorPickle(1024, 0, [1024], [1]), ("data/0", new byte[4096]));
        using var checkpoint = TorchCheckpoint.Open(path);
        Assert.Equal(4096, checkpoint.StateDict()["w"].ReadBytes().Length);
    }
}
