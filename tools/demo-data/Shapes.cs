namespace SdAppliance.Tools.DemoData;

/// <summary>
/// The shapes as inside-tests on a unit frame: (u, v) in [-1, 1]² with v pointing down, the shape
/// filling that square as fully as its outline allows, so "size" means the same for every shape.
/// </summary>
public static class Shapes
{
    /// <summary>The shapes of the base training data.</summary>
    public static readonly IReadOnlyList<string> Base = ["circle", "square", "triangle", "star", "ring", "cross"];

    /// <summary>Held out of the base data: the new concept of the fine-tuning test.</summary>
    public const string Heart = "heart";

    public static readonly IReadOnlyList<string> All = [.. Base, Heart];

    private static readonly (double X, double Y)[] Triangle = [(0, -1), (1, 0.8), (-1, 0.8)];
    private static readonly (double X, double Y)[] Star = BuildStar();
    private static readonly (double X, double Y)[] HeartOutline = BuildHeart();

    public static bool Inside(string shape, double u, double v) => shape switch
    {
        "circle" => u * u + v * v <= 1,
        "square" => Math.Abs(u) <= 0.85 && Math.Abs(v) <= 0.85,
        "triangle" => InPolygon(Triangle, u, v),
        "star" => InPolygon(Star, u, v),
        "ring" => u * u + v * v <= 1 && u * u + v * v >= 0.36,
        "cross" => (Math.Abs(u) <= 0.32 && Math.Abs(v) <= 1) || (Math.Abs(v) <= 0.32 && Math.Abs(u) <= 1),
        "heart" => InPolygon(HeartOutline, u, v),
        _ => throw new ArgumentException($"unknown shape '{shape}'", nameof(shape)),
    };

    private static (double, double)[] BuildStar()
    {
        // Five points, the first straight up; inner radius 0.45 of the outer one.
        var points = new (double, double)[10];
        for (var i = 0; i < 10; i++)
        {
            var r = i % 2 == 0 ? 1.0 : 0.45;
            var a = -Math.PI / 2 + i * Math.PI / 5;
            points[i] = (r * Math.Cos(a), r * Math.Sin(a) + 0.08);
        }
        return points;
    }

    private static (double, double)[] BuildHeart()
    {
        // The classic parametric heart x = 16 sin³t, y = 13 cos t − 5 cos 2t − 2 cos 3t − cos 4t, scaled to the unit frame.
        const int n = 120;
        var points = new (double, double)[n];
        for (var i = 0; i < n; i++)
        {
            var t = 2 * Math.PI * i / n;
            var x = 16 * Math.Pow(Math.Sin(t), 3);
            var y = 13 * Math.Cos(t) - 5 * Math.Cos(2 * t) - 2 * Math.Cos(3 * t) - Math.Cos(4 * t);
            points[i] = (x / 16.5, -(y + 2.5) / 14.6);
        }
        return points;
    }

    private static bool InPolygon((double X, double Y)[] polygon, double x, double y)
    {
        var inside = false;
        for (int i = 0, j = polygon.Length - 1; i < polygon.Length; j = i++)
        {
            var (xi, yi) = polygon[i];
            var (xj, yj) = polygon[j];
            if ((yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi) inside = !inside;
        }
        return inside;
    }
}
