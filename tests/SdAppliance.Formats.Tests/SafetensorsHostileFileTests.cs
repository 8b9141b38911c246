using System.Buffers.Binary;
using System.Text;

namespace SdAppliance.Formats.Tests;

/// <summary>Malformed files must fail with a message naming the file and the problem.</summary>
public sealed class SafetensorsHostileFileTests : IDisposable
{
    private readonly TempFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    private string WriteRaw(byte[] contents)
    {
        var path = _temp.File("hostile.safetensors");
        File.WriteAllBytes(path, contents);
        return path;
    }

    // A file with this header (declared at its true length unless told otherwise) and data buffer size.
    private string WriteHostile(string header, int dataLength, ulong? declaredLength = null) =>
        WriteHostile(Encoding.UTF8.GetBytes(header), dataLength, declaredLength);

    private string WriteHostile(byte[] header, int dataLength, ulong? declaredLength = null)
    {
        var contents = new byte[8 + header.Length + dataLength];
        BinaryPrimitives.WriteUInt64LittleEndian(contents, declaredLength ?? (ulong)header.Length);
        header.CopyTo(contents, 8);
        return WriteRaw(contents);
    }

    private static void AssertRejected(string path, string expectedProblem)
    {
        var e = Assert.Throws<SafetensorsFormatException>(() => SafetensorsFile.Open(path).Dispose());
        Assert.Contains(path, e.Message);
        Assert.Contains(expectedProblem, e.Problem);
        Assert.Equal(path, e.FilePath);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(7)]
    public void FileShorterThanTheLengthPrefix(int length) =>
        AssertRejected(WriteRaw(new byte[length]), $"the file is {length} bytes, shorter than the 8-byte header length prefix");

    [Fact]
    public void HeaderLengthPastTheEndOfTheFile() =>
        AssertRejected(WriteHostile("{}", dataLength: 0, declaredLength: 3), "the header length 3 runs past the end of the file (10 bytes)");

    [Theory]
    [InlineData(100_000_001UL)]
    [InlineData(ulong.MaxValue)]
    public void HeaderLengthOverTheLimit(ulong declared) =>
        AssertRejected(WriteHostile("{}", dataLength: 0, declaredLength: declared), $"the header length {declared} is over the 100000000-byte limit");

    [Fact]
    public void HeaderNotUtf8() =>
        AssertRejected(WriteHostile([(byte)'{', (byte)'"', 0xC3, 0x28, (byte)'"', (byte)':', (byte)'1', (byte)'}'], 0), "the header is not valid UTF-8");

    [Theory]
    [InlineData("""{"a":{"dtype":"F32",""")]
    [InlineData("""{"a" 1}""")]
    [InlineData("""{} {}""")]
    [InlineData("""{}/*c*/""")]
    [InlineData("")]
    public void HeaderNotJson(string header) =>
        AssertRejected(WriteHostile(header, 0), "the header is not valid JSON");

    [Theory]
    [InlineData("tensor", "tensor 'a': 'shape' is not an array of non-negative integers")]
    [InlineData("metadata", "'__metadata__' value for 'x' is not a str")]
    public void HeaderNested100000DeepIsRefusedWithoutOverflowingTheStack(string where, string problem)
    {
        // Deep nesting where a shape or a metadata string belongs: the field's type is checked, nothing recurses.
        var deep = new string('[', 100_000) + new string(']', 100_000);
        var header = where == "tensor"
            ? "{\"a\":{\"dtype\":\"F32\",\"shape\":" + deep + ",\"data_offsets\":[0,4]}}"
            : "{\"__metadata__\":{\"x\":" + deep + "}}";
        AssertRejected(WriteHostile(header, 4), problem);
    }

    [Theory]
    [InlineData("[]")]
    [InlineData("\"text\"")]
    [InlineData("12")]
    public void HeaderNotAnObject(string header) =>
        AssertRejected(WriteHostile(header, 0), "the header is not a JSON object");

    [Theory]
    [InlineData("""{"a":[1]}""", "tensor 'a': its entry is not an object")]
    [InlineData("""{"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}}""", "tensor 'a': 'dtype' is not a string")]
    [InlineData("""{"a":{"dtype":"F32","shape":"1","data_offsets":[0,4]}}""", "tensor 'a': 'shape' is not an array of non-negative integers")]
    [InlineData("""{"a":{"dtype":"F32","shape":[1],"data_offsets":{"b":0}}}""", "tensor 'a': 'data_offsets' is not an array of two non-negative integers")]
    [InlineData("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}""", "tensor 'a': 'data_offsets' has 3 numbers instead of 2")]
    [InlineData("""{"a":{"dtype":"F32","shape":[1]}}""", "tensor 'a': 'data_offsets' is missing")]
    [InlineData("""{"a":{"shape":[1],"data_offsets":[0,4]}}""", "tensor 'a': 'dtype' is missing")]
    [InlineData("""{"a":{"dtype":"F32","data_offsets":[0,4]}}""", "tensor 'a': 'shape' is missing")]
    [InlineData("""{"__metadata__":["x"],"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", "'__metadata__' is not an object of strings")]
    public void WrongFieldTypes(string header, string problem) =>
        AssertRejected(WriteHostile(header, 4), problem);

    [Theory]
    [InlineData("F128")]
    [InlineData("f32")]
    [InlineData("C64")]
    public void UnknownDType(string dtype) =>
        AssertRejected(WriteHostile($$$"""{"a":{"dtype":"{{{dtype}}}","shape":[1],"data_offsets":[0,4]}}""", 4), $"tensor 'a': unknown dtype '{dtype}'");

    [Theory]
    [InlineData("[-1]")]
    [InlineData("[1.5]")]
    [InlineData("[4e0]")]
    [InlineData("[null]")]
    public void NegativeOrNonIntegerShape(string shape) =>
        AssertRejected(WriteHostile($$$"""{"a":{"dtype":"U8","shape":{{{shape}}},"data_offsets":[0,4]}}""", 4), "tensor 'a': 'shape' is not an array of non-negative integers");

    [Theory]
    [InlineData("[-4,0]")]
    [InlineData("[0,4.0]")]
    public void NegativeOrNonIntegerOffsets(string offsets) =>
        AssertRejected(WriteHostile($$$"""{"a":{"dtype":"U8","shape":[4],"data_offsets":{{{offsets}}}}}""", 4), "tensor 'a': 'data_offsets' is not an array of two non-negative integers");

    [Fact]
    public void OffsetsPastTheDataBuffer() =>
        AssertRejected(WriteHostile("""{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}""", 4), "tensor 'a': data_offsets [0, 8] run past the end of the 4-byte data buffer");

    [Fact]
    public void OffsetsBeyondAnyLong() =>
        AssertRejected(WriteHostile("""{"a":{"dtype":"U8","shape":[0],"data_offsets":[18446744073709551615,18446744073709551615]}}""", 0), "run past the end of the 0-byte data buffer");

    [Fact]
    public void OffsetsBeginAfterEnd() =>
        AssertRejected(WriteHostile("""{"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}""", 4), "tensor 'a': data_offsets [4, 0] end before they begin");

    [Fact]
    public void OverlappingTensors() =>
        AssertRejected(WriteHostile("""
            {"a":{"dtype":"U8","shape":[6],"data_offsets":[0,6]},"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}
            """, 8), "tensor 'b' (bytes 4..8) overlaps tensor 'a' (bytes 0..6)");

    [Fact]
    public void HoleBetweenTensors() =>
        AssertRejected(WriteHostile("""
            {"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}
            """, 8), "bytes 2..4 of the data buffer, before tensor 'b', belong to no tensor");

    [Fact]
    public void HoleAtTheStart() =>
        AssertRejected(WriteHostile("""{"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}""", 8), "bytes 0..4 of the data buffer, before tensor 'a', belong to no tensor");

    [Fact]
    public void BytesAfterTheLastTensor() =>
        AssertRejected(WriteHostile("""{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}""", 5), "the tensors cover 4 bytes but the data buffer is 5 bytes");

    [Fact]
    public void DataWithoutTensors() =>
        AssertRejected(WriteHostile("{}", 8), "the tensors cover 0 bytes but the data buffer is 8 bytes");

    [Fact]
    public void ByteSizeNotShapeTimesElementSize() =>
        AssertRejected(WriteHostile("""{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}""", 8), "tensor 'a': data_offsets [0, 8] span 8 bytes but F32 [3] needs 12");

    [Theory]
    [InlineData("[4294967296,4294967296]")]
    [InlineData("[9223372036854775807,2]")]
    [InlineData("[18446744073709551615]")]
    public void ShapeProductOverflow(string shape) =>
        AssertRejected(WriteHostile($$$"""{"a":{"dtype":"U8","shape":{{{shape}}},"data_offsets":[0,0]}}""", 0), "overflows");

    [Fact]
    public void ShapeProductOverflowNamesTheShape() =>
        AssertRejected(WriteHostile("""{"a":{"dtype":"F64","shape":[4294967296,2147483648],"data_offsets":[0,0]}}""", 0), "tensor 'a': the size of shape [4294967296, 2147483648] overflows");

    [Fact]
    public void ByteSizeOverflowsAfterTheElementCountFits() =>
        AssertRejected(WriteHostile("""{"a":{"dtype":"I64","shape":[2305843009213693952],"data_offsets":[0,0]}}""", 0), "tensor 'a': the size of shape [2305843009213693952] overflows");

    [Fact]
    public void DuplicateTensorKey() =>
        AssertRejected(WriteHostile("""
            {"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}
            """, 4), "the header has the key 'a' twice");

    [Fact]
    public void DuplicateMetadataBlock() =>
        AssertRejected(WriteHostile("""{"__metadata__":{},"__metadata__":{}}""", 0), "the header has the key '__metadata__' twice");

    [Fact]
    public void DuplicateMetadataKey() =>
        AssertRejected(WriteHostile("""{"__metadata__":{"k":"1","k":"2"}}""", 0), "'__metadata__' has the key 'k' twice");

    [Fact]
    public void DuplicateFieldInATensor() =>
        AssertRejected(WriteHostile("""{"a":{"dtype":"U8","dtype":"I8","shape":[1],"data_offsets":[0,1]}}""", 1), "tensor 'a': 'dtype' is given twice");

    [Theory]
    [InlineData("1")]
    [InlineData("null")]
    [InlineData("true")]
    [InlineData("[\"v\"]")]
    [InlineData("{\"v\":\"w\"}")]
    public void MetadataValueNotAString(string value) =>
        AssertRejected(WriteHostile($$$"""{"__metadata__":{"format":"pt","k":{{{value}}}}}""", 0), "'__metadata__' value for 'k' is not a string");

    [Fact]
    public void ToleratedVariantsStillOpen()
    {
        // What the reference reader accepts must open too: an unpadded header, a null metadata
        // map, unknown fields, keys in any order, zero-sized tensors and scalars.
        var path = WriteHostile("""
            {"s":{"dtype":"F32","shape":[],"data_offsets":[2,6],"extra":{"x":[1]}},"__metadata__":null,"z":{"data_offsets":[2,2],"shape":[0,3],"dtype":"I64"},"b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}
            """, 6);
        using var file = SafetensorsFile.Open(path);
        Assert.Equal(["s", "z", "b"], file.Names);
        Assert.Empty(file.Metadata);
        Assert.Equal(1, file["s"].ElementCount);
        Assert.Equal(0, file.GetSpan("z").Length);
    }
}
