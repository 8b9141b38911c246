namespace SdAppliance.Formats.Tests;

public sealed class SafetensorsAtomicWriteTests : IDisposable
{
    private readonly TempFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    private static SafetensorsTensor Bytes(string name, params byte[] bytes) => new(name, SafetensorsDType.U8, [bytes.Length], bytes);

    [Fact]
    public void SuccessfulWriteLeavesOnlyTheTarget()
    {
        var path = _temp.File("model.safetensors");
        SafetensorsFile.Write(path, [Bytes("a", 1, 2)]);
        SafetensorsFile.Write(path, [Bytes("b", 3, 4, 5)]);

        Assert.Equal([path], Directory.GetFiles(_temp.Path));
        using var file = SafetensorsFile.Open(path);
        Assert.Equal(["b"], file.Names);
    }

    [Fact]
    public void CallbackThrowingMidwayLeavesTheExistingTargetAndNoTempFile()
    {
        var path = _temp.File("model.safetensors");
        SafetensorsFile.Write(path, [Bytes("old", 9, 9)]);
        var before = File.ReadAllBytes(path);
        var failure = new InvalidOperationException("export failed");

        var thrown = Assert.Throws<InvalidOperationException>(() => SafetensorsFile.Write(path, [
            Bytes("first", 1, 2, 3),
            new SafetensorsTensor("second", SafetensorsDType.F32, [1024], stream =>
            {
                stream.Write(new byte[100]);
                throw failure;
            }),
        ]));

        Assert.Same(failure, thrown);
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Equal([path], Directory.GetFiles(_temp.Path));
    }

    [Fact]
    public void FailedFirstWriteCreatesNothing()
    {
        var path = _temp.File("new.safetensors");
        Assert.Throws<IOException>(() => SafetensorsFile.Write(path, [
            new SafetensorsTensor("t", SafetensorsDType.U8, [4], _ => throw new IOException("disk gone")),
        ]));
        Assert.Empty(Directory.GetFiles(_temp.Path));
    }

    [Fact]
    public void CallbackCannotSeekOrCloseTheFile()
    {
        var path = _temp.File("model.safetensors");
        SafetensorsFile.Write(path, [
            new SafetensorsTensor("a", SafetensorsDType.U8, [2], stream =>
            {
                Assert.False(stream.CanSeek);
                Assert.Throws<NotSupportedException>(() => stream.Position = 0);
                stream.Write([7, 8]);
                stream.Dispose();
            }),
            Bytes("b", 1),
        ]);

        using var file = SafetensorsFile.Open(path);
        Assert.Equal([7, 8], file.ReadBytes("a"));
        Assert.Equal([1], file.ReadBytes("b"));
    }
}
