using System.Numerics;
using System.Text;
using SdAppliance.Formats.Pickle;
using static SdAppliance.Formats.Tests.PickleBytes;

namespace SdAppliance.Formats.Tests;

/// <summary>The pickle virtual machine on hand-assembled streams of every protocol.</summary>
public sealed class PickleUnpicklerTests
{
    private static object? Load(byte[] pickle) => Unpickler.Load(pickle);

    [Fact]
    public void Protocol2Scalars()
    {
        // (None, True, False, 255, 65535, -5, 2**40, 2**70, -2**63, 1.5, "héllo") as a MARK ... TUPLE.
        var value = Load(Protocol2("(", "N", 0x88, 0x89, "K", 255, "M", 0xFF, 0xFF, BinInt(-5),
            0x8a, 6, new byte[] { 0, 0, 0, 0, 0, 1 }, 0x8a, 9, new byte[] { 0, 0, 0, 0, 0, 0, 0, 0, 0x40 },
            0x8a, 8, new byte[] { 0, 0, 0, 0, 0, 0, 0, 0x80 }, BinFloat(1.5), Unicode("héllo"), "t"));
        var t = Assert.IsType<PickleTuple>(value);
        Assert.Equal<object?>([null, true, false, 255L, 65535L, -5L, 1L << 40, BigInteger.Pow(2, 70), long.MinValue, 1.5, "héllo"], t);
    }

    [Fact]
    public void ListsTuplesAndDicts()
    {
        // {"a": [1, 2, 3], "b": (7,), "c": (1, 2), "d": (1, 2, 3), 5: ()}
        var value = Load(Protocol2("}", "(",
            Unicode("a"), "]", "K", 1, "a", "(", "K", 2, "K", 3, "e",
            Unicode("b"), "K", 7, 0x85,
            Unicode("c"), "K", 1, "K", 2, 0x86,
            Unicode("d"), "K", 1, "K", 2, "K", 3, 0x87,
            "u", "K", 5, ")", "s"));
        var dict = Assert.IsType<PickleDict>(value);
        Assert.False(dict.IsOrdered);
        Assert.Equal<object?>(["a", "b", "c", "d", 5L], dict.Keys);
        Assert.Equal<object?>([1L, 2L, 3L], Assert.IsType<List<object?>>(dict["a"]));
        Assert.Equal(new PickleTuple(7L), dict["b"]);
        Assert.Equal(new PickleTuple(1L, 2L), dict["c"]);
        Assert.Equal(new PickleTuple(1L, 2L, 3L), dict["d"]);
        Assert.Same(PickleTuple.Empty, dict[5L]);
    }

    [Fact]
    public void MemoSharesOneObject()
    {
        // x = []; d = {}; ((x, x), (d, d)) through BINPUT/BINGET and LONG_BINPUT/LONG_BINGET.
        var value = Load(Protocol2("]", "q", 0, "h", 0, 0x86, "}", "r", Int32(300), "j", Int32(300), 0x86, 0x86));
        var outer = Assert.IsType<PickleTuple>(value);
        var lists = Assert.IsType<PickleTuple>(outer[0]);
        Assert.IsType<List<object?>>(lists[0]);
        Assert.Same(lists[0], lists[1]);
        var dicts = Assert.IsType<PickleTuple>(outer[1]);
        Assert.IsType<PickleDict>(dicts[0]);
        Assert.Same(dicts[0], dicts[1]);
    }

    [Fact]
    public void Protocol4And5Opcodes()
    {
        // FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL + NEWOBJ (an OrderedDict), SHORT_BINBYTES,
        // BINBYTES, BINBYTES8, BYTEARRAY8, EMPTY_SET + ADDITEMS, FROZENSET, BINUNICODE8.
        var body = Of("(",
            ShortUnicode("collections"), 0x94, ShortUnicode("OrderedDict"), 0x94, 0x93, 0x94, ")", 0x81, 0x94,
            "(", ShortUnicode("k"), "C", 2, new byte[] { 1, 2 }, "u",
            "B", Int32(3), new byte[] { 3, 4, 5 },
            0x8e, Int64(1), new byte[] { 6 },
            0x96, Int64(2), new byte[] { 7, 8 },
            0x8f, "(", "K", 1, "K", 2, "K", 1, 0x90,
            "(", "K", 9, 0x91,
            0x8d, Int64(2), "ok",
            "h", 2,
            "t");
        var value = Load(Of(0x80, 5, 0x95, Int64(body.Length + 1), body, "."));
        var t = Assert.IsType<PickleTuple>(value);
        var ordered = Assert.IsType<PickleDict>(t[0]);
        Assert.True(ordered.IsOrdered);
        Assert.Equal(new byte[] { 1, 2 }, ordered["k"]);
        Assert.Equal(new byte[] { 3, 4, 5 }, t[1]);
        Assert.Equal(new byte[] { 6 }, t[2]);
        Assert.Equal(new byte[] { 7, 8 }, t[3]);
        var set = Assert.IsType<PickleSet>(t[4]);
        Assert.Equal<object?>([1L, 2L], set);
        var frozen = Assert.IsType<PickleSet>(t[5]);
        Assert.True(frozen.IsFrozen);
        Assert.Equal("ok", t[6]);
        // Memo slot 2 holds the STACK_GLOBAL result (slots 0 and 1 are its two strings).
        Assert.Equal(new PickleGlobal("collections", "OrderedDict"), t[7]);
    }

    [Fact]
    public void Protocol0TextOpcodes()
    {
        // (dict(a=1), list [True, 123456789012345678901234567890, 1.25, b"a\nb", "hé"]) in protocol 0.
        var value = Load(Of("(", "(dp0\n", "Va\n", "I1\n", "s",
            "(lp1\n", "I01\n", "a", "L123456789012345678901234567890L\n", "a", "F1.25\n", "a", "S'a\\nb'\n", "a", "Vh\\u00e9\n", "a",
            "g1\n", "t."));
        var t = Assert.IsType<PickleTuple>(value);
        Assert.Equal(1L, Assert.IsType<PickleDict>(t[0])["a"]);
        var list = Assert.IsType<List<object?>>(t[1]);
        Assert.Equal<object?>([true, BigInteger.Parse("123456789012345678901234567890"), 1.25, "a\nb", "hé"], list);
        Assert.Same(list, t[2]);
    }

    [Fact]
    public void DictKeysCompareAsPython()
    {
        // {1: "a", True: "b", 1.0: "c", (1, "x"): "d"}: 1, True and 1.0 are one key, as in Python.
        var value = Load(Protocol2("}", "(", "K", 1, Unicode("a"), 0x88, Unicode("b"), BinFloat(1.0), Unicode("c"),
            "K", 1, Unicode("x"), 0x86, Unicode("d"), "u"));
        var dict = Assert.IsType<PickleDict>(value);
        Assert.Equal(2, dict.Count);
        Assert.Equal("c", dict[1L]);
        Assert.Equal(1L, dict.Keys.First());
        Assert.Equal("d", dict[new PickleTuple(1L, "x")]);
    }

    [Fact]
    public void DeeplyNestedTupleKeyDoesNotExhaustTheStack()
    {
        var nesting = Enumerable.Repeat((object)0x85, 100_000).ToArray();
        var value = Load(Protocol2(Of("}", ")"), Of(nesting), "N", "s"));
        Assert.Single(Assert.IsType<PickleDict>(value));
    }

    [Fact]
    public void UnknownOpcodeIsRefusedWithItsPosition()
    {
        var e = Assert.Throws<PickleFormatException>(() => Load(Of(0x80, 2, "N", 0xff, ".")));
        Assert.Equal("unknown opcode 0xff", e.Problem);
        Assert.Equal(3, e.Position);
    }

    [Theory]
    [InlineData(new byte[] { })]
    [InlineData(new byte[] { 0x80, 2, (byte)'N' })]
    [InlineData(new byte[] { 0x80, 2, (byte)'X', 100, 0, 0, 0, (byte)'a', (byte)'b' })]
    [InlineData(new byte[] { 0x80, 2, (byte)'J', 1, 2 })]
    public void TruncatedPickleIsRefused(byte[] pickle)
    {
        var e = Assert.Throws<PickleFormatException>(() => Load(pickle));
        Assert.Contains("truncated", e.Problem);
    }

    [Fact]
    public void HugeDeclaredLengthIsRefusedWithoutAllocating()
    {
        var e = Assert.Throws<PickleFormatException>(() => Load(Of(0x80, 4, 0x8e, Int64(long.MaxValue), ".")));
        Assert.Contains($"{long.MaxValue} bytes", e.Problem);
    }

    [Fact]
    public void OverlongDecimalIntegerIsRefused()
    {
        var e = Assert.Throws<PickleFormatException>(() => Load(Of("L", new string('9', 5000), "L\n.")));
        Assert.Contains("5000 digits", e.Problem);
        Assert.Equal(BigInteger.Parse(new string('9', 4300)), Load(Of("L", new string('9', 4300), "\n.")));
    }

    [Theory]
    [InlineData("R.", "stack underflow")]
    [InlineData("0.", "stack underflow")]
    [InlineData("t.", "no MARK to pop back to")]
    [InlineData("h\u0007.", "memo entry 7 is read before it is written")]
    [InlineData("(N.", "STOP inside an unclosed MARK")]
    [InlineData("NNK\u0001s.", "SETITEM on a None, not a dict")]
    [InlineData("Na.", "stack underflow")]
    [InlineData("}]]s.", "a list cannot be a dict key (unhashable)")]
    public void MalformedStacksAreRefused(string body, string problem)
    {
        var e = Assert.Throws<PickleFormatException>(() => Load(Of(0x80, 2, Encoding.Latin1.GetBytes(body))));
        Assert.Equal(problem, e.Problem);
    }

    [Fact]
    public void ProtocolNewerThanFiveIsRefused()
    {
        var e = Assert.Throws<PickleFormatException>(() => Load(Of(0x80, 6, "N.")));
        Assert.Contains("protocol 6", e.Problem);
    }

    [Fact]
    public void AllowedGlobalsCannotBeMisused()
    {
        var storage = Assert.Throws<PickleFormatException>(() => Load(Protocol2(Global("torch", "FloatStorage"), ")", "R")));
        Assert.Contains("'torch.FloatStorage' is not callable", storage.Problem);
        var encode = Assert.Throws<PickleFormatException>(() => Load(Protocol2(Global("_codecs", "encode"), ")", 0x81)));
        Assert.Contains("'_codecs.encode' is not a class", encode.Problem);
        var build = Assert.Throws<PickleFormatException>(() => Load(Protocol2("]", "}", "b")));
        Assert.Contains("BUILD (setting object state) on a list is not allowed", build.Problem);
        var call = Assert.Throws<PickleFormatException>(() => Load(Protocol2(Unicode("os.system"), ")", "R")));
        Assert.Contains("a str is called", call.Problem);
        var codec = Assert.Throws<PickleFormatException>(() => Load(Protocol2(Global("_codecs", "encode"), Unicode("x"), Unicode("rot13"), 0x86, "R")));
        Assert.Contains("encoding 'rot13' is not supported", codec.Problem);
    }

    [Fact]
    public void PersistentIdWithoutResolverIsRefused()
    {
        var e = Assert.Throws<PickleFormatException>(() => Load(Protocol2(Unicode("storage"), 0x85, "Q")));
        Assert.Contains("persistent id ('storage',)", e.Problem);
    }

    [Fact]
    public void OrderedDictStateAndItems()
    {
        // OrderedDict() with SETITEMS, then BUILD {"_metadata": {"": 1}} as torch's state_dict() pickles it.
        var value = Load(Protocol2(Global("collections", "OrderedDict"), ")", "R", "(", Unicode("w"), "K", 4, "u",
            "}", Unicode("_metadata"), "}", Unicode(""), "K", 1, "s", "s", "b"));
        var dict = Assert.IsType<PickleDict>(value);
        Assert.True(dict.IsOrdered);
        Assert.Equal(4L, dict["w"]);
        Assert.Equal(1L, Assert.IsType<PickleDict>(dict.Attributes!["_metadata"])[""]);
    }

    public static TheoryData<string, char, byte[], object> NumpyScalars() => new()
    {
        { "i8", '<', BitConverter.GetBytes(470000L), 470000L },
        { "i4", '>', [0xFF, 0xFF, 0xFF, 0xFE], -2L },
        { "u2", '<', [0x34, 0x12], 0x1234L },
        { "u8", '<', [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], (BigInteger)ulong.MaxValue },
        { "f8", '<', BitConverter.GetBytes(1e-4), 1e-4 },
        { "f4", '<', BitConverter.GetBytes(0.25f), 0.25 },
        { "f2", '<', [0x00, 0x3E], 1.5 },
        { "b1", '|', [1], true },
        { "i1", '|', [0xFB], -5L },
    };

    [Theory]
    [MemberData(nameof(NumpyScalars))]
    public void NumpyScalarsBecomeNumbers(string descriptor, char byteOrder, byte[] data, object expected) =>
        Assert.Equal(expected, Load(Protocol2(NumpyScalar(descriptor, byteOrder, data))));

    [Fact]
    public void NumpyScalarOfAnUninterpretedKindIsKept()
    {
        var value = Assert.IsType<NumpyScalar>(Load(Protocol2(NumpyScalar("c8", '<', new byte[8]))));
        Assert.Equal("c8", value.DType.Descriptor);
        Assert.Equal(8, value.Data.Length);
    }

    [Fact]
    public void NumpyArrayKeepsShapeDtypeAndBytes()
    {
        // numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b') then BUILD (1, (2, 2), dtype('<f4'), False, data).
        var data = new byte[16];
        BitConverter.GetBytes(2.5f).CopyTo(data, 12);
        var value = Load(Protocol2(Global("numpy.core.multiarray", "_reconstruct"), Global("numpy", "ndarray"), "K", 0, 0x85, Bytes2("b"u8.ToArray()), 0x87, "R",
            "(", "K", 1, "K", 2, "K", 2, 0x86, Global("numpy", "dtype"), Unicode("f4"), 0x89, 0x88, 0x87, "R",
            "(", "K", 3, Unicode("<"), "NNN", BinInt(-1), BinInt(-1), "K", 0, "tb", 0x89, Bytes2(data), "tb"));
        var array = Assert.IsType<NumpyArray>(value);
        Assert.Equal([2L, 2L], array.Shape);
        Assert.Equal("f4", array.DType!.Descriptor);
        Assert.Equal(2.5f, BitConverter.ToSingle(array.Data, 12));
    }

    [Fact]
    public void LoadStopsAtStopAndReportsThePosition()
    {
        using var stream = new MemoryStream(Of(0x80, 2, "K", 1, ".", 0x80, 2, "K", 2, ".", "rest"));
        var unpickler = new Unpickler(stream);
        Assert.Equal(1L, unpickler.Load());
        Assert.Equal(5, unpickler.Position);
        Assert.Equal(2L, unpickler.Load());
        Assert.Equal(10, unpickler.Position);
    }
}
