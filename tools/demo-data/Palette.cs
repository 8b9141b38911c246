using SdAppliance.Imaging;

namespace SdAppliance.Tools.DemoData;

/// <summary>The eight named colours of the demo world: plain saturated RGB so a colour name has one meaning.</summary>
public static class Palette
{
    public static readonly IReadOnlyList<string> Names = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"];

    public static readonly IReadOnlyList<Rgb> Colours =
    [
        new(255, 0, 0), new(0, 255, 0), new(0, 0, 255), new(255, 255, 0),
        new(128, 0, 255), new(255, 128, 0), new(255, 255, 255), new(0, 0, 0),
    ];

    public static Rgb Of(string name) => Colours[IndexOf(name)];

    public static int IndexOf(string name)
    {
        for (var i = 0; i < Names.Count; i++)
            if (Names[i] == name) return i;
        throw new ArgumentException($"'{name}' is not one of the palette colours {string.Join(", ", Names)}", nameof(name));
    }

    /// <summary>The palette entry nearest to a pixel (squared RGB distance).</summary>
    public static int Nearest(byte r, byte g, byte b)
    {
        var best = 0;
        var bestDistance = int.MaxValue;
        for (var i = 0; i < Colours.Count; i++)
        {
            int dr = r - Colours[i].R, dg = g - Colours[i].G, db = b - Colours[i].B;
            var d = dr * dr + dg * dg + db * db;
            if (d < bestDistance)
            {
                bestDistance = d;
                best = i;
            }
        }
        return best;
    }
}
