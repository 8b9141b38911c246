using SdAppliance.Appliance.Jobs;
using SdAppliance.Formats;
using SdAppliance.Imaging;

namespace SdAppliance.Appliance.Tests.Jobs;

/// <summary>Tests that run the engine (training, generation) run alone: its thread count and default generator are the process's.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class EngineCollection
{
    public const string Name = "Engine jobs";
}

/// <summary>A tiny LoRA run on the demo model: synthetic 64x64 images in the data folder's datasets/squares.</summary>
internal static class TinyLora
{
    public static void MakeDataset(string dataFolder)
    {
        var folder = Path.Combine(dataFolder, "datasets", "squares");
        Directory.CreateDirectory(folder);
        for (var i = 0; i < 4; i++)
        {
            var image = new RgbImage(64, 64, 3);
            for (var y = 0; y < 64; y++)
                for (var x = 0; x < 64; x++)
                {
                    var inside = x >= 8 + 4 * i && x < 40 + 4 * i && y >= 16 && y < 48;
                    var p = image.Pixel(x, y);
                    (p[0], p[1], p[2]) = inside ? ((byte)255, (byte)0, (byte)0) : ((byte)0, (byte)0, (byte)255);
                }
            ImageCodec.Save(image, Path.Combine(folder, $"img{i}.png"));
            File.WriteAllText(Path.Combine(folder, $"img{i}.txt"), "a red square on a blue background");
        }
    }

    public static object Request(int steps, int? saveEvery = null) => new Dictionary<string, object?>
    {
        ["method"] = "lora", ["data"] = "datasets/squares", ["resolution"] = 64, ["max_train_steps"] = steps,
        ["network_dim"] = 4, ["network_alpha"] = 4, ["learning_rate"] = 1e-3, ["seed"] = 7,
        ["save_every_n_steps"] = saveEvery, ["save_last_k"] = 100,
    };

    /// <summary>The trained LoRA file of a completed training job.</summary>
    public static string LoraOf(string dataFolder, JobView job) =>
        Path.Combine(dataFolder, job.Result!.Value.GetProperty("outputs")[0].GetString()!);

    /// <summary>Every tensor of two LoRA files is the same, byte for byte.</summary>
    public static void AssertSameTensors(string expected, string actual)
    {
        using var a = TensorFile.Open(expected);
        using var b = TensorFile.Open(actual);
        Assert.Equal(a.Names.Order(StringComparer.Ordinal), b.Names.Order(StringComparer.Ordinal));
        Assert.NotEmpty(a.Names);
        foreach (var name in a.Names)
            Assert.True(a.ReadBytes(name).AsSpan().SequenceEqual(b.ReadBytes(name)), $"{name} differs");
    }
}
