using SdAppliance.Imaging;

namespace SdAppliance.Web.Tests.EndToEnd;

/// <summary>Small demo-style pictures for uploads: a coloured square on a light background, in several sizes and shapes.</summary>
public static class DemoPictures
{
    private static readonly (int Width, int Height)[] Sizes = [(96, 96), (128, 64), (64, 128), (96, 96), (120, 80), (80, 120)];

    /// <summary>Writes <c>shape1.png</c> … <c>shapeN.png</c> into <paramref name="folder"/> and returns their paths.</summary>
    public static List<string> Write(string folder, int count)
    {
        var files = new List<string>();
        for (var n = 0; n < count; n++)
        {
            var (w, h) = Sizes[n % Sizes.Length];
            var image = new RgbImage(w, h, 3);
            for (var y = 0; y < h; y++)
                for (var x = 0; x < w; x++)
                {
                    var inside = x > w / 4 && x < 3 * w / 4 && y > h / 4 && y < 3 * h / 4;
                    var p = image.Pixel(x, y);
                    p[0] = (byte)(inside ? 40 * n + 30 : 230);
                    p[1] = (byte)(inside ? 200 - (30 * n) : 230);
                    p[2] = (byte)(inside ? 90 : 215);
                }
            var path = Path.Combine(folder, $"shape{n + 1}.png");
            ImageCodec.Save(image, path, ImageEncodeOptions.Png);
            files.Add(path);
        }
        return files;
    }
}
