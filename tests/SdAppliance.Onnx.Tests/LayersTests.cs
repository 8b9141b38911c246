using Microsoft.ML.OnnxRuntime;
using SdAppliance.Onnx.Graphs;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using DataType = Onnx.TensorProto.Types.DataType;

namespace SdAppliance.Onnx.Tests;

/// <summary>The shared layers, written into a graph, checked by ONNX and run by ONNX Runtime against the same libtorch modules.</summary>
public sealed class LayersTests : IDisposable
{
    private readonly string folder = Directory.CreateTempSubdirectory("sdapp-onnx-layers-").FullName;

    public void Dispose() => Directory.Delete(folder, recursive: true);

    [Fact]
    public void GroupNormConvLinearAndAttentionMatchLibtorch()
    {
        using var scope = torch.NewDisposeScope();
        using var g = new Generator(7);
        var conv = new Conv2d(8, 16, 3, padding: 1, generator: g);
        var norm = new GroupNorm(4, 16, eps: 1e-6);
        using (Autograd.NoGrad())
        {
            norm.Weight!.Copy_(torch.Randn([16], g));
            norm.Bias!.Copy_(torch.Randn([16], g));
        }
        var proj = new Linear(16, 16, generator: g);
        var weights = new Dictionary<string, Tensor>();
        foreach (var (name, p) in conv.NamedParameters("conv")) weights[name] = p;
        foreach (var (name, p) in norm.NamedParameters("norm")) weights[name] = p;
        foreach (var (name, p) in proj.NamedParameters("proj")) weights[name] = p;

        var graph = new OnnxGraph("layers");
        var layers = new Layers(graph, weights);
        var x = graph.Input("x", DataType.Float, "batch", 8, "h", "w");
        var h = layers.Silu(layers.GroupNorm(layers.Conv2d(x, "conv", padding: 1), "norm", 4, 1e-6));
        var tokens = layers.Transpose(graph.Op("Reshape", [h, graph.Int64s(0, 16, -1)]), 0, 2, 1);
        var q = layers.Linear(tokens, "proj");
        var attended = layers.ScaledDotProductAttention(q, q, q, heads: 2, dimHead: 8);
        graph.Output("y", attended, DataType.Float, "batch", "tokens", 16);
        var path = Path.Combine(folder, "model.onnx");
        OnnxFile.Save(graph.ToModel(), path);
        OnnxChecker.AssertValid(path);

        var input = torch.Randn([2, 8, 5, 6], g);
        Tensor expected;
        using (Autograd.NoGrad())
        {
            var th = Functional.Silu(norm.Forward(conv.Forward(input)));
            var tt = th.Flatten(2).Transpose(1, 2);
            var tq = proj.Forward(tt).Unflatten(-1, 2, 8).Transpose(1, 2);
            expected = Functional.ScaledDotProductAttention(tq, tq, tq).Transpose(1, 2).Flatten(2);
        }

        using var session = new InferenceSession(path);
        var data = input.ToArray<float>();
        using var value = OrtValue.CreateTensorValueFromMemory(data, [2, 8, 5, 6]);
        using var results = session.Run(new RunOptions(), ["x"], [value], ["y"]);
        var actual = results[0].GetTensorDataAsSpan<float>().ToArray();
        var wanted = expected.ToArray<float>();
        Assert.Equal(wanted.Length, actual.Length);
        var maxDiff = wanted.Zip(actual, (a, b) => Math.Abs(a - b)).Max();
        Assert.True(maxDiff < 1e-5, $"max |diff| {maxDiff}");
    }
}
