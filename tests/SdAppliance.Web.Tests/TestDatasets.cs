using SdAppliance.Imaging;

namespace SdAppliance.Web.Tests;

/// <summary>Small training sets written straight into a data folder, for tests that train on the demo model.</summary>
internal static class TestDatasets
{
    /// <summary>Three 64x64 pictures of a red square on blue at a few positions, each with its caption.</summary>
    public static void RedSquares(string folder)
    {
        Directory.CreateDirectory(folder);
        for (var i = 0; i < 3; i++)
        {
            var image = new RgbImage(64, 64, 3);
            for (var y = 0; y < 64; y++)
                for (var x = 0; x < 64; x++)
                {
                    var inside = x >= 8 + 8 * i && x < 40 + 8 * i && y >= 16 && y < 48;
                    var p = image.Pixel(x, y);
                    (p[0], p[1], p[2]) = inside ? ((byte)255, (byte)0, (byte)0) : ((byte)0, (byte)0, (byte)255);
                }
            ImageCodec.Save(image, Path.Combine(folder, $"img{i}.png"));
            File.WriteAllText(Path.Combine(folder, $"img{i}.txt"), "a red square on a blue background");
        }
    }
}
