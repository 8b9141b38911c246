using System.Text;

namespace SdAppliance.Formats;

/// <summary>
/// Files and folders replaced all at once: the new content is written under a temporary name beside
/// the target (the same folder, so the final rename stays on one file system), then renamed over it.
/// A reader sees the old content or the complete new one; a failure (a throwing callback, a full
/// disk) leaves the target as it was and no temporary file or folder behind.
/// </summary>
public static class AtomicFile
{
    /// <summary>
    /// Writes <paramref name="path"/> through <paramref name="write"/>, which gets a writable, seekable
    /// stream at position 0 (and must not dispose it); the file is flushed to disk before the rename.
    /// </summary>
    /// <param name="path">Target file; replaced if it exists. Its folder must exist.</param>
    public static void Write(string path, Action<Stream> write)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(write);
        var fullPath = Path.GetFullPath(path);
        var temp = TemporaryName(fullPath);
        try
        {
            using (var file = new FileStream(temp, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, bufferSize: 1 << 20))
            {
                write(file);
                file.Flush(flushToDisk: true);
            }
            File.Move(temp, fullPath, overwrite: true);
        }
        catch
        {
            TryDelete(() => File.Delete(temp));
            throw;
        }
    }

    /// <summary>Writes <paramref name="bytes"/> to <paramref name="path"/> atomically.</summary>
    public static void WriteAllBytes(string path, ReadOnlyMemory<byte> bytes) => Write(path, stream => stream.Write(bytes.Span));

    /// <summary>Writes <paramref name="text"/> to <paramref name="path"/> atomically, as UTF-8 without a byte-order mark.</summary>
    public static void WriteAllText(string path, string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        WriteAllBytes(path, Encoding.UTF8.GetBytes(text));
    }

    /// <summary>
    /// Builds a folder through <paramref name="build"/> (which fills the empty temporary folder it is
    /// given) and puts it at <paramref name="path"/>: renamed onto the free name, or swapped with the
    /// folder already there, which is deleted afterwards (and put back if the swap fails).
    /// </summary>
    /// <param name="path">Target folder; replaced as a whole if it exists. Its parent must exist.</param>
    public static void WriteFolder(string path, Action<string> build)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(build);
        var fullPath = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        var temp = TemporaryName(fullPath);
        Directory.CreateDirectory(temp);
        try
        {
            build(temp);
            if (!Directory.Exists(fullPath))
            {
                Directory.Move(temp, fullPath);
                return;
            }
            var old = Path.Combine(Path.GetDirectoryName(fullPath)!, $".{Path.GetFileName(fullPath)}.{Guid.NewGuid():N}.old");
            Directory.Move(fullPath, old);
            try
            {
                Directory.Move(temp, fullPath);
            }
            catch
            {
                Directory.Move(old, fullPath);
                throw;
            }
            TryDelete(() => Directory.Delete(old, recursive: true));
        }
        catch
        {
            TryDelete(() =>
            {
                if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
            });
            throw;
        }
    }

    /// <summary>
    /// Removes what writes in <paramref name="folder"/> left when their process was killed before they could clean up: the
    /// hidden <c>.NAME.ID.tmp</c> files and folders being written, and <c>.NAME.ID.old</c> folders being replaced. Only call it
    /// for a folder no other process is writing to. Returns the paths removed.
    /// </summary>
    public static IReadOnlyList<string> RemoveLeftovers(string folder)
    {
        if (!Directory.Exists(folder)) return [];
        var removed = new List<string>();
        foreach (var entry in Directory.EnumerateFileSystemEntries(folder, ".*"))
        {
            var name = Path.GetFileName(entry);
            if (!name.EndsWith(".tmp", StringComparison.Ordinal) && !name.EndsWith(".old", StringComparison.Ordinal)) continue;
            if (Directory.Exists(entry)) Directory.Delete(entry, recursive: true);
            else File.Delete(entry);
            removed.Add(entry);
        }
        return removed;
    }

    // Hidden (a leading dot) and unique, so concurrent writers of one target do not collide.
    private static string TemporaryName(string fullPath) =>
        Path.Combine(Path.GetDirectoryName(fullPath)!, $".{Path.GetFileName(fullPath)}.{Guid.NewGuid():N}.tmp");

    private static void TryDelete(Action delete)
    {
        try
        {
            delete();
        }
        catch (IOException)
        {
            // Nothing more can be done; the original error is the one worth reporting.
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
