using SdAppliance.Imaging;
using SdAppliance.Tools.DemoData;

namespace SdAppliance.Demo.Tests;

/// <summary>Where the committed demo model is: models/demo beside SdAppliance.sln, found by walking up from the test binaries.</summary>
internal static class DemoModelLocation
{
    public static string Folder
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "SdAppliance.sln")))
                    return Path.Combine(dir.FullName, "models", "demo");
            throw new DirectoryNotFoundException($"no SdAppliance.sln above {AppContext.BaseDirectory}");
        }
    }
}

/// <summary>
/// What a demo picture shows, read the simple way: the background is the palette colour most of the
/// border pixels are nearest to, the foreground the palette colour most of the other pixels are nearest
/// to, and the shape is the largest 4-connected region of foreground pixels.
/// </summary>
public sealed record SceneReading(string Background, string Foreground, bool[] Mask, int Width, int Height)
{
    public static SceneReading Read(RgbImage image)
    {
        int w = image.Width, h = image.Height;
        var labels = new int[w * h];
        for (var i = 0; i < labels.Length; i++)
            labels[i] = Palette.Nearest(image.Pixels[3 * i], image.Pixels[3 * i + 1], image.Pixels[3 * i + 2]);
        var border = new int[Palette.Names.Count];
        for (var y = 0; y < h; y++)
            for (var x = 0; x < w; x++)
                if (x < 2 || y < 2 || x >= w - 2 || y >= h - 2) border[labels[y * w + x]]++;
        var background = ArgMax(border);
        // Edges blend the two colours (red on yellow gives orange pixels, white on blue purple ones), so the
        // foreground is voted by its core: the 40 % of other pixels farthest from the background colour.
        var bg = Palette.Colours[background];
        var others = Enumerable.Range(0, labels.Length).Where(i => labels[i] != background)
            .OrderByDescending(i => Distance(image.Pixels, i, bg)).ToList();
        var core = others.Take(Math.Max(10, others.Count * 2 / 5)).ToList();
        var votes = new int[Palette.Names.Count];
        foreach (var i in core) votes[labels[i]]++;
        votes[background] = -1;
        var foreground = ArgMax(votes);
        // The shape: pixels nearer the foreground colour than the background colour, so a blended edge
        // is split at its middle as the anti-aliased training pictures are.
        var fg = Palette.Colours[foreground];
        var mask = LargestComponent([.. Enumerable.Range(0, labels.Length).Select(i => Distance(image.Pixels, i, fg) < Distance(image.Pixels, i, bg))], w, h);
        return new SceneReading(Palette.Names[background], Palette.Names[foreground], mask, w, h);
    }

    public int Area => Mask.Count(m => m);

    private static int Distance(byte[] pixels, int i, Rgb colour)
    {
        int dr = pixels[3 * i] - colour.R, dg = pixels[3 * i + 1] - colour.G, db = pixels[3 * i + 2] - colour.B;
        return dr * dr + dg * dg + db * db;
    }

    private static int ArgMax(int[] counts)
    {
        var best = 0;
        for (var i = 1; i < counts.Length; i++)
            if (counts[i] > counts[best]) best = i;
        return best;
    }

    private static bool[] LargestComponent(bool[] mask, int w, int h)
    {
        var component = new int[mask.Length];
        var sizes = new List<int> { 0 };
        var stack = new Stack<int>();
        for (var start = 0; start < mask.Length; start++)
        {
            if (!mask[start] || component[start] != 0) continue;
            var id = sizes.Count;
            var size = 0;
            component[start] = id;
            stack.Push(start);
            while (stack.Count > 0)
            {
                var p = stack.Pop();
                size++;
                int x = p % w, y = p / w;
                foreach (var (nx, ny) in new[] { (x - 1, y), (x + 1, y), (x, y - 1), (x, y + 1) })
                {
                    if (nx < 0 || ny < 0 || nx >= w || ny >= h) continue;
                    var q = ny * w + nx;
                    if (!mask[q] || component[q] != 0) continue;
                    component[q] = id;
                    stack.Push(q);
                }
            }
            sizes.Add(size);
        }
        if (sizes.Count == 1) return new bool[mask.Length];
        var largest = sizes.IndexOf(sizes.Max());
        return [.. component.Select(c => c == largest)];
    }
}

/// <summary>
/// A shape classifier written for the tests: six numbers describe the foreground mask (fill of its
/// bounding box, solidity = area / convex hull area, enclosed hole fraction, aspect ratio, vertical
/// centroid in the box, and the ratio of the box to the area's equivalent square), and a Gaussian naive
/// Bayes model fitted on the scene generator's own pictures names the shape.
/// </summary>
public sealed class ShapeClassifier
{
    private const int FeatureCount = 6;

    // Standard deviations below this are raised to it: the generator draws some shapes (squares) almost
    // identically every time, and a model's slightly rounded square must still count as one.
    private const double MinStd = 0.04;

    private readonly Dictionary<string, (double[] Mean, double[] Std)> classes = new(StringComparer.Ordinal);

    public IReadOnlyCollection<string> Shapes => classes.Keys;

    /// <summary>Fits the classifier on <paramref name="perShape"/> generated scenes of each shape (plain backgrounds).</summary>
    public static ShapeClassifier Fit(IReadOnlyList<string> shapes, int perShape, int seed)
    {
        var classifier = new ShapeClassifier();
        var random = new Random(seed);
        foreach (var shape in shapes)
        {
            var features = new List<double[]>();
            while (features.Count < perShape)
            {
                var scene = PlainScene(random, shape);
                var reading = SceneReading.Read(scene.Render());
                if (Features(reading) is { } f) features.Add(f);
            }
            var mean = new double[FeatureCount];
            var std = new double[FeatureCount];
            for (var k = 0; k < FeatureCount; k++)
            {
                mean[k] = features.Average(f => f[k]);
                std[k] = Math.Max(MinStd, Math.Sqrt(features.Average(f => (f[k] - mean[k]) * (f[k] - mean[k]))));
            }
            classifier.classes[shape] = (mean, std);
        }
        return classifier;
    }

    /// <summary>A training scene with a plain background (the kind the test prompts ask for).</summary>
    public static DemoScene PlainScene(Random random, string shape) =>
        DemoScene.Random(random, [shape]) with { Background2 = null };

    /// <summary>The most likely shape, or null when there is no foreground worth calling a shape.</summary>
    public string? Classify(SceneReading reading)
    {
        if (Features(reading) is not { } f) return null;
        string? best = null;
        var bestScore = double.PositiveInfinity;
        foreach (var (shape, (mean, std)) in classes)
        {
            var score = 0.0;
            for (var k = 0; k < FeatureCount; k++)
            {
                var z = (f[k] - mean[k]) / std[k];
                score += 0.5 * z * z + Math.Log(std[k]);
            }
            if (score < bestScore)
            {
                bestScore = score;
                best = shape;
            }
        }
        return best;
    }

    public static double[]? Features(SceneReading reading)
    {
        int w = reading.Width, h = reading.Height;
        var mask = reading.Mask;
        int minX = w, minY = h, maxX = -1, maxY = -1, area = 0;
        double sumY = 0;
        var points = new List<(int X, int Y)>();
        for (var y = 0; y < h; y++)
            for (var x = 0; x < w; x++)
            {
                if (!mask[y * w + x]) continue;
                area++;
                sumY += y + 0.5;
                minX = Math.Min(minX, x);
                maxX = Math.Max(maxX, x);
                minY = Math.Min(minY, y);
                maxY = Math.Max(maxY, y);
                // Pixel corners, so the hull of a filled square is the square itself.
                points.Add((x, y));
                points.Add((x + 1, y));
                points.Add((x, y + 1));
                points.Add((x + 1, y + 1));
            }
        // Fewer pixels than the smallest training shape's core cannot be told apart reliably.
        if (area < 40) return null;
        double bw = maxX - minX + 1, bh = maxY - minY + 1;
        var hull = HullArea(points);
        var holes = EnclosedHoles(mask, w, h);
        return
        [
            area / (bw * bh),
            area / Math.Max(hull, 1),
            holes / (double)(area + holes),
            bw / bh,
            (sumY / area - minY) / bh,
            Math.Sqrt(bw * bh / area) - 1,
        ];
    }

    /// <summary>Pixels outside the mask that cannot reach the image border through other such pixels.</summary>
    private static int EnclosedHoles(bool[] mask, int w, int h)
    {
        var reached = new bool[mask.Length];
        var stack = new Stack<int>();
        for (var y = 0; y < h; y++)
            for (var x = 0; x < w; x++)
                if ((x == 0 || y == 0 || x == w - 1 || y == h - 1) && !mask[y * w + x])
                {
                    reached[y * w + x] = true;
                    stack.Push(y * w + x);
                }
        while (stack.Count > 0)
        {
            var p = stack.Pop();
            int x = p % w, y = p / w;
            foreach (var (nx, ny) in new[] { (x - 1, y), (x + 1, y), (x, y - 1), (x, y + 1) })
            {
                if (nx < 0 || ny < 0 || nx >= w || ny >= h) continue;
                var q = ny * w + nx;
                if (mask[q] || reached[q]) continue;
                reached[q] = true;
                stack.Push(q);
            }
        }
        var holes = 0;
        for (var i = 0; i < mask.Length; i++)
            if (!mask[i] && !reached[i]) holes++;
        return holes;
    }

    /// <summary>Area of the convex hull (Andrew's monotone chain, shoelace formula).</summary>
    private static double HullArea(List<(int X, int Y)> points)
    {
        var sorted = points.Distinct().OrderBy(p => p.X).ThenBy(p => p.Y).ToList();
        if (sorted.Count < 3) return 0;
        static long Cross((int X, int Y) o, (int X, int Y) a, (int X, int Y) b) =>
            (long)(a.X - o.X) * (b.Y - o.Y) - (long)(a.Y - o.Y) * (b.X - o.X);
        var hull = new List<(int X, int Y)>();
        foreach (var pass in new[] { sorted, Enumerable.Reverse(sorted).ToList() })
        {
            var start = hull.Count;
            foreach (var p in pass)
            {
                while (hull.Count >= start + 2 && Cross(hull[^2], hull[^1], p) <= 0) hull.RemoveAt(hull.Count - 1);
                hull.Add(p);
            }
            hull.RemoveAt(hull.Count - 1);
        }
        double twice = 0;
        for (var i = 0; i < hull.Count; i++)
        {
            var (a, b) = (hull[i], hull[(i + 1) % hull.Count]);
            twice += (double)a.X * b.Y - (double)b.X * a.Y;
        }
        return Math.Abs(twice) / 2;
    }
}
