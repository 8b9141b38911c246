using System.Globalization;
using System.Text;
using SdAppliance.Onnx.Graphs;
using SdAppliance.Torch;
using DataType = Onnx.TensorProto.Types.DataType;

namespace SdAppliance.Onnx.Tests;

/// <summary>
/// A tagger in the WD14 layout, built here because no real one can be downloaded: <c>model.onnx</c> takes
/// <c>[1, S, S, 3]</c> float32 and scores each tag as <c>sigmoid(wB·B + wG·G + wR·R + bias)</c> of the image's mean
/// channels (0-1) in the order the model receives them, BGR; <c>selected_tags.csv</c> lists four ratings, general tags
/// and two characters. A pure red image scores "red" high only when it is fed as BGR, and a narrow black image scores
/// "bright" only when it is padded with white. Linked into the CLI's and the appliance's tests too.
/// </summary>
public static class TinyTagger
{
    public sealed record Tag(string Name, int Category, double B, double G, double R, double Bias);

    /// <summary>The tags, in output order. The constant ones (no weights) score sigmoid(bias): 0.5, 0.4, 0.3, 0.6.</summary>
    public static readonly IReadOnlyList<Tag> Tags =
    [
        new("general", 9, 0, 0, 0, 1),
        new("sensitive", 9, 0, 0, 4, -2),
        new("questionable", 9, 0, 0, 0, -2),
        new("explicit", 9, 0, 0, 0, -3),
        new("red", 0, -4, -4, 8, -2),
        new("green", 0, -4, 8, -4, -2),
        new("blue", 0, 8, -4, -4, -2),
        new("bright", 0, 2, 2, 2, -3),
        new("dark", 0, -2, -2, -2, 3),
        new("simple_background", 0, 0, 0, 0, 0),
        new("^_^", 0, 0, 0, 0, Logit(0.4)),
        new("looking_at_viewer", 0, 0, 0, 0, Logit(0.3)),
        new("hatsune_miku_(vocaloid)", 4, -3, 6, -3, -1),
        new("kaname_madoka", 4, 0, 0, 0, Logit(0.6)),
    ];

    /// <summary>Writes the tagger into <paramref name="folder"/> (created) with an input of <paramref name="size"/>²; <paramref name="outputWidth"/> makes a model whose scores do not match the CSV.</summary>
    public static string Write(string folder, int size = 24, int? outputWidth = null)
    {
        Directory.CreateDirectory(folder);
        var width = outputWidth ?? Tags.Count;
        using var scope = torch.NewDisposeScope();
        var weights = new float[3 * width];
        var biases = new float[width];
        for (var i = 0; i < width; i++)
        {
            var t = Tags[i % Tags.Count];
            (weights[i], weights[width + i], weights[2 * width + i], biases[i]) = ((float)t.B, (float)t.G, (float)t.R, (float)t.Bias);
        }
        var graph = new OnnxGraph("tiny-tagger");
        var input = graph.Input("input", DataType.Float, 1, size, size, 3);
        var means = graph.Op("ReduceMean", [input], ("axes", new long[] { 1, 2 }), ("keepdims", 0L));
        var unit = graph.Op("Mul", [means, graph.Scalar(1.0 / 255)]);
        var logits = graph.Op("Add", [
            graph.Op("MatMul", [unit, graph.Initializer("weight", torch.FromArray(weights, [3, width], DType.Float32))]),
            graph.Initializer("bias", torch.FromArray(biases, [width], DType.Float32))]);
        graph.Output("predictions_sigmoid", graph.Op("Sigmoid", [logits]), DataType.Float, 1, width);
        OnnxFile.Save(graph.ToModel(), Path.Combine(folder, "model.onnx"));

        var csv = new StringBuilder("tag_id,name,category,count\n");
        for (var i = 0; i < Tags.Count; i++)
        {
            // One name quoted, as CSV writers may quote any field.
            var name = Tags[i].Name == "kaname_madoka" ? "\"kaname_madoka\"" : Tags[i].Name;
            csv.Append(CultureInfo.InvariantCulture, $"{1000 + i},{name},{Tags[i].Category},{5000 - i}\n");
        }
        File.WriteAllText(Path.Combine(folder, "selected_tags.csv"), csv.ToString());
        return folder;
    }

    /// <summary>The scores of an image whose mean channels are <paramref name="r"/>, <paramref name="g"/>, <paramref name="b"/> (0-255), computed here in double.</summary>
    public static double[] Scores(double r, double g, double b) =>
        [.. Tags.Select(t => 1 / (1 + Math.Exp(-(t.B * b / 255 + t.G * g / 255 + t.R * r / 255 + t.Bias))))];

    private static double Logit(double p) => Math.Log(p / (1 - p));
}
