using System.Globalization;
using SdAppliance.Tools.DemoData;

// demo-data --out DIR [--count N] [--seed S] [--shapes circle,square,...]
// Writes the synthetic shapes dataset of the demo model (PNG + caption .txt pairs).
string? output = null;
var count = 4096;
var seed = 1;
IReadOnlyList<string> shapes = Shapes.Base;
for (var i = 0; i < args.Length; i++)
{
    string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
    switch (args[i])
    {
        case "--out": output = Next(); break;
        case "--count": count = int.Parse(Next(), CultureInfo.InvariantCulture); break;
        case "--seed": seed = int.Parse(Next(), CultureInfo.InvariantCulture); break;
        case "--shapes": shapes = Next().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries); break;
        default:
            Console.Error.WriteLine("usage: demo-data --out DIR [--count N] [--seed S] [--shapes circle,square,triangle,star,ring,cross]");
            return 2;
    }
}
if (output is null)
{
    Console.Error.WriteLine("usage: demo-data --out DIR [--count N] [--seed S] [--shapes circle,square,triangle,star,ring,cross]");
    return 2;
}
DemoScene.Write(DemoScene.Dataset(seed, count, shapes), output);
Console.WriteLine($"wrote {count} images to {output}");
return 0;
