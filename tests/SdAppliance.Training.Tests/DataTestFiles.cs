using SdAppliance.Imaging;

namespace SdAppliance.Training.Tests;

/// <summary>A temporary dataset folder that deletes itself, with helpers that write small images and captions.</summary>
internal sealed class DataTestFolder : IDisposable
{
    public DataTestFolder()
    {
        Root = Path.Combine(Path.GetTempPath(), "sdapp-data-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Root);
    }

    public string Root { get; }

    public string PathOf(string relative) => Path.Combine(Root, relative);

    /// <summary>Writes an image whose pixel (x, y) is (x + shift, y, 7·x + y) mod 256, so every column is told apart.</summary>
    public string Image(string relative, int width, int height, int shift = 0)
    {
        var path = PathOf(relative);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        ImageCodec.Save(Pattern(width, height, shift), path);
        return path;
    }

    public string Text(string relative, string text)
    {
        var path = PathOf(relative);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, text);
        return path;
    }

    public string Bytes(string relative, byte[] bytes)
    {
        var path = PathOf(relative);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    public static RgbImage Pattern(int width, int height, int shift = 0)
    {
        var image = new RgbImage(width, height, 3);
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
            {
                var p = image.Pixel(x, y);
                p[0] = (byte)((x + shift) % 256);
                p[1] = (byte)(y % 256);
                p[2] = (byte)(((7 * x) + y) % 256);
            }
        return image;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
            // A leftover temp folder is harmless.
        }
    }
}
