namespace SdAppliance.Formats.Tests;

/// <summary>The one temp-and-rename helper every writer of files and folders goes through.</summary>
public sealed class AtomicFileTests : IDisposable
{
    private readonly TempFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    [Fact]
    public void TextReplacesTheFileAsUtf8WithoutABom()
    {
        var path = _temp.File("run.json");
        AtomicFile.WriteAllText(path, "old");
        AtomicFile.WriteAllText(path, "é");
        Assert.Equal([0xC3, 0xA9], File.ReadAllBytes(path));
        Assert.Equal([path], Directory.GetFileSystemEntries(_temp.Path));
    }

    [Fact]
    public void AFailedWriteKeepsTheOldFileAndLeavesNoTemporary()
    {
        var path = _temp.File("data.bin");
        AtomicFile.WriteAllBytes(path, new byte[] { 1, 2 });
        Assert.Throws<IOException>(() => AtomicFile.Write(path, stream =>
        {
            stream.Write([9, 9, 9]);
            throw new IOException("disk full");
        }));
        Assert.Equal([1, 2], File.ReadAllBytes(path));
        Assert.Equal([path], Directory.GetFileSystemEntries(_temp.Path));
    }

    [Fact]
    public void AFolderIsReplacedAsAWhole()
    {
        var path = _temp.File("model");
        AtomicFile.WriteFolder(path, temp => File.WriteAllText(Path.Combine(temp, "a.txt"), "first"));
        AtomicFile.WriteFolder(path, temp => File.WriteAllText(Path.Combine(temp, "b.txt"), "second"));
        // Nothing of the first folder survives: it was swapped out, not written into.
        Assert.Equal([Path.Combine(path, "b.txt")], Directory.GetFileSystemEntries(path));
        Assert.Equal([path], Directory.GetFileSystemEntries(_temp.Path));
    }

    [Fact]
    public void AFailedFolderKeepsTheOldOneAndLeavesNoTemporary()
    {
        var path = _temp.File("model");
        AtomicFile.WriteFolder(path, temp => File.WriteAllText(Path.Combine(temp, "a.txt"), "first"));
        Assert.Throws<InvalidOperationException>(() => AtomicFile.WriteFolder(path, temp =>
        {
            File.WriteAllText(Path.Combine(temp, "half.txt"), "half");
            throw new InvalidOperationException("conversion failed");
        }));
        Assert.Equal("first", File.ReadAllText(Path.Combine(path, "a.txt")));
        Assert.Equal([path], Directory.GetFileSystemEntries(_temp.Path));
        Assert.Throws<InvalidOperationException>(() => AtomicFile.WriteFolder(_temp.File("new"), _ => throw new InvalidOperationException("no")));
        Assert.Equal([path], Directory.GetFileSystemEntries(_temp.Path));
    }

    [Fact]
    public void LeftoversOfAKilledWriteAreRemovedAndNothingElse()
    {
        var path = _temp.File("data.bin");
        AtomicFile.WriteAllBytes(path, new byte[] { 1 });
        // What a process killed inside Write or WriteFolder leaves: its hidden temporary file or folder, or the old folder.
        var file = _temp.File($".data.bin.{Guid.NewGuid():N}.tmp");
        File.WriteAllBytes(file, [9]);
        var folder = Directory.CreateDirectory(_temp.File($".model.{Guid.NewGuid():N}.tmp")).FullName;
        File.WriteAllText(Path.Combine(folder, "half.txt"), "half");
        var old = Directory.CreateDirectory(_temp.File($".model.{Guid.NewGuid():N}.old")).FullName;
        string[] kept = [path, _temp.File("notes.tmp"), _temp.File(".settings")];
        File.WriteAllText(kept[1], "mine");
        File.WriteAllText(kept[2], "mine");

        var removed = AtomicFile.RemoveLeftovers(_temp.Path);

        Assert.Equal(new[] { file, folder, old }.Order(StringComparer.Ordinal), removed.Order(StringComparer.Ordinal));
        Assert.Equal(kept.Order(StringComparer.Ordinal), Directory.GetFileSystemEntries(_temp.Path).Order(StringComparer.Ordinal));
        Assert.Empty(AtomicFile.RemoveLeftovers(_temp.File("missing")));
    }
}
