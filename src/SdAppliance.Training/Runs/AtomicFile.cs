namespace SdAppliance.Training.Runs;

/// <summary>Files written under a temporary name and renamed, so a crash never leaves half a file.</summary>
public static class AtomicFile
{
    public static void WriteAllText(string path, string text)
    {
        var temp = path + $".{Guid.NewGuid():N}.tmp";
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write))
            using (var writer = new StreamWriter(stream))
            {
                writer.Write(text);
                writer.Flush();
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }
}
