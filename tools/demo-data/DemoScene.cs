using System.Text;
using SdAppliance.Imaging;

namespace SdAppliance.Tools.DemoData;

/// <summary>
/// One picture of the demo world: a shape of one colour on a plain or two-tone background, with a size
/// (small, medium, large) and a place. <see cref="Caption"/> follows one small regular grammar:
/// "a [small|large] COLOUR SHAPE [in the PLACE] [on a COLOUR [and COLOUR] background]".
/// </summary>
public sealed record DemoScene(
    string Shape, string Colour, string Background, string? Background2, bool SplitVertical,
    string Size, string Position, double CenterX, double CenterY, double Radius,
    bool SayPosition, bool SayBackground)
{
    public const int ImageSize = 64;

    public static readonly IReadOnlyList<string> Positions = ["center", "top left", "top right", "bottom left", "bottom right"];

    public string Caption
    {
        get
        {
            var text = new StringBuilder("a ");
            if (Size != "medium") text.Append(Size).Append(' ');
            text.Append(Colour).Append(' ').Append(Shape);
            if (SayPosition) text.Append(" in the ").Append(Position);
            if (SayBackground)
            {
                text.Append(" on a ").Append(Background);
                if (Background2 is not null) text.Append(" and ").Append(Background2);
                text.Append(" background");
            }
            return text.ToString();
        }
    }

    /// <summary>Draws the scene with 4×4 supersampling, so edges are anti-aliased as a camera would see them.</summary>
    public RgbImage Render()
    {
        const int ss = 4;
        var image = new RgbImage(ImageSize, ImageSize, 3);
        var fg = Palette.Of(Colour);
        var bg = Palette.Of(Background);
        var bg2 = Background2 is null ? bg : Palette.Of(Background2);
        for (var y = 0; y < ImageSize; y++)
            for (var x = 0; x < ImageSize; x++)
            {
                var second = Background2 is not null && (SplitVertical ? x >= ImageSize / 2 : y >= ImageSize / 2);
                var back = second ? bg2 : bg;
                var hits = 0;
                for (var sy = 0; sy < ss; sy++)
                    for (var sx = 0; sx < ss; sx++)
                    {
                        var u = (x + (sx + 0.5) / ss - CenterX) / Radius;
                        var v = (y + (sy + 0.5) / ss - CenterY) / Radius;
                        if (Shapes.Inside(Shape, u, v)) hits++;
                    }
                var a = hits / (double)(ss * ss);
                var p = image.Pixel(x, y);
                p[0] = (byte)Math.Round(back.R + a * (fg.R - back.R));
                p[1] = (byte)Math.Round(back.G + a * (fg.G - back.G));
                p[2] = (byte)Math.Round(back.B + a * (fg.B - back.B));
            }
        return image;
    }

    /// <summary>A random scene; every choice comes from <paramref name="random"/>, so a seed fixes the dataset.</summary>
    public static DemoScene Random(Random random, IReadOnlyList<string> shapes, string? colour = null, string? shape = null)
    {
        shape ??= shapes[random.Next(shapes.Count)];
        colour ??= Palette.Names[random.Next(Palette.Names.Count)];
        var others = Palette.Names.Where(c => c != colour).ToList();
        var background = others[random.Next(others.Count)];
        string? background2 = null;
        if (random.NextDouble() < 0.15)
        {
            var rest = others.Where(c => c != background).ToList();
            background2 = rest[random.Next(rest.Count)];
        }
        var splitVertical = random.Next(2) == 0;
        var position = random.NextDouble() < 0.4 ? "center" : Positions[1 + random.Next(4)];
        // Corners hold small and medium shapes only, so a shape never leaves the picture.
        var size = position == "center" ? new[] { "small", "medium", "large" }[random.Next(3)] : new[] { "small", "medium" }[random.Next(2)];
        var radius = size switch
        {
            "small" => 10 + 3 * random.NextDouble(),
            "medium" => 14 + 3 * random.NextDouble(),
            _ => 20 + 5 * random.NextDouble(),
        };
        double cx = 32, cy = 32;
        if (position != "center")
        {
            var corner = 20.0;
            cx = position.EndsWith("left", StringComparison.Ordinal) ? corner : ImageSize - corner;
            cy = position.StartsWith("top", StringComparison.Ordinal) ? corner : ImageSize - corner;
        }
        cx += (random.NextDouble() * 2 - 1) * 2.5;
        cy += (random.NextDouble() * 2 - 1) * 2.5;
        return new DemoScene(shape, colour, background, background2, splitVertical, size, position, cx, cy, radius,
            SayPosition: random.NextDouble() < 0.7, SayBackground: random.NextDouble() < 0.85);
    }

    /// <summary>
    /// A dataset of <paramref name="count"/> scenes: each (shape, colour) pair appears equally often, the
    /// rest is random, all from <paramref name="seed"/>.
    /// </summary>
    public static IReadOnlyList<DemoScene> Dataset(int seed, int count, IReadOnlyList<string> shapes)
    {
        var random = new Random(seed);
        var scenes = new List<DemoScene>(count);
        for (var i = 0; i < count; i++)
        {
            var pair = i % (shapes.Count * Palette.Names.Count);
            scenes.Add(Random(random, shapes, Palette.Names[pair % Palette.Names.Count], shapes[pair / Palette.Names.Count]));
        }
        return scenes;
    }

    /// <summary>Writes scenes as PNG + same-name .txt caption files (the kohya layout the trainer reads).</summary>
    public static void Write(IReadOnlyList<DemoScene> scenes, string folder, string prefix = "img")
    {
        Directory.CreateDirectory(folder);
        for (var i = 0; i < scenes.Count; i++)
        {
            var name = Path.Combine(folder, $"{prefix}-{i:D5}");
            ImageCodec.Save(scenes[i].Render(), name + ".png");
            File.WriteAllText(name + ".txt", scenes[i].Caption);
        }
    }
}
