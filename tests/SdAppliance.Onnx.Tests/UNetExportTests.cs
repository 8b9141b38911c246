using System.Text.Json.Nodes;
using Microsoft.ML.OnnxRuntime;
using Xunit.Abstractions;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.Loading;
using SdAppliance.Models.Unet;
using SdAppliance.Onnx.Export;
using SdAppliance.Onnx.Graphs;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using DataType = Onnx.TensorProto.Types.DataType;

namespace SdAppliance.Onnx.Tests;

/// <summary>
/// The UNet builder: the tiny fixture model (SD 1.x shaped) and a small SDXL-shaped UNet, exported, checked by ONNX and run
/// by ONNX Runtime CPU against our libtorch forward on the same inputs.
/// </summary>
public sealed class UNetExportTests(ITestOutputHelper output) : IDisposable
{
    /// <summary>The bound for float32: both engines compute the same float32 operations, in different orders.</summary>
    private const double Float32Tolerance = 1e-4;

    /// <summary>
    /// A two-level SDXL-shaped UNet: DownBlock2D first, linear projections, heads per block, 2 transformer layers on level 2,
    /// the text_time embedding (text_embeds 64 - 6 × 8 = 16 wide).
    /// </summary>
    private const string TinyXlConfig = """
        {
          "block_out_channels": [32, 64], "layers_per_block": 1, "norm_num_groups": 8, "cross_attention_dim": 32,
          "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"], "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
          "attention_head_dim": [2, 4], "transformer_layers_per_block": [1, 2], "use_linear_projection": true,
          "addition_embed_type": "text_time", "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 64,
          "upcast_attention": null, "sample_size": 8
        }
        """;

    /// <summary>
    /// The same UNet distilled as SSD-1B is: an up path deeper than the down path, layer by layer
    /// (reverse_transformer_layers_per_block), and a mid block of one resnet.
    /// </summary>
    private const string TinyDistilledXlChanges = """
        {"reverse_transformer_layers_per_block": [[1, 3], 1], "mid_block_type": "UNetMidBlock2D"}
        """;

    private readonly string folder = Directory.CreateTempSubdirectory("sdapp-onnx-unet-").FullName;

    public void Dispose() => Directory.Delete(folder, recursive: true);

    private static UNet2DConditionModel LoadTinyUnet()
    {
        var model = ModelLoader.Load(Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sd"));
        return model.Unet;
    }

    private static UNet2DConditionModel TinyXl(ulong seed, bool distilled = false)
    {
        using var generator = new Generator(seed);
        var config = JsonNode.Parse(TinyXlConfig)!.AsObject();
        if (distilled)
            foreach (var (key, value) in JsonNode.Parse(TinyDistilledXlChanges)!.AsObject()) config[key] = value?.DeepClone();
        return new UNet2DConditionModel(UNet2DConditionConfig.Parse(config.ToJsonString()), new ModuleOptions(Generator: generator)).Eval();
    }

    [Theory]
    [InlineData(AttentionForm.Standard, OnnxLayout.Optimum)]
    [InlineData(AttentionForm.Standard, OnnxLayout.Diffusers)]
    [InlineData(AttentionForm.OnnxRuntimeFused, OnnxLayout.Optimum)]
    [InlineData(AttentionForm.OnnxRuntimeFused, OnnxLayout.Diffusers)]
    public void TinyFixtureUnetMatchesLibtorch(AttentionForm attention, OnnxLayout layout)
    {
        using var scope = torch.NewDisposeScope();
        var unet = LoadTinyUnet();
        var path = Export(unet, new OnnxExportOptions { Attention = attention, Layout = layout });
        CheckFile(path, attention);

        using var g = new Generator(3);
        var sample = torch.Randn([2, 4, 8, 8], g);
        var context = torch.Randn([2, 77, 32], g);
        // optimum feeds one rank-0 step, diffusers' pipeline np.array([t]) of shape [1]: both broadcast over the batch.
        long[] timestepShape = layout == OnnxLayout.Optimum ? [] : [1];
        var expected = Reference(unet, sample, torch.Scalar(421.5, DType.Float32), context);
        var actual = Run(path, new() { ["sample"] = sample, ["encoder_hidden_states"] = context }, [421.5f], timestepShape);
        AssertClose(expected, actual, Float32Tolerance);
    }

    [Fact]
    public void DiffusersLayoutTakesOneTimestepPerBatchItemAndOddSizes()
    {
        using var scope = torch.NewDisposeScope();
        var unet = LoadTinyUnet();
        var path = Export(unet, new OnnxExportOptions { Layout = OnnxLayout.Diffusers });
        using var g = new Generator(4);
        // 9x7 is not a multiple of the UNet's factor 2: the up path must take the skip tensors' sizes.
        var sample = torch.Randn([2, 4, 9, 7], g);
        var context = torch.Randn([2, 77, 32], g);
        var expected = Reference(unet, sample, torch.Tensor([10f, 900f]), context);
        var actual = Run(path, new() { ["sample"] = sample, ["encoder_hidden_states"] = context }, [10f, 900f], [2]);
        AssertClose(expected, actual, Float32Tolerance);
    }

    [Theory]
    [InlineData(AttentionForm.Standard, false)]
    [InlineData(AttentionForm.OnnxRuntimeFused, false)]
    [InlineData(AttentionForm.Standard, true)]
    public void SdxlShapedUnetMatchesLibtorch(AttentionForm attention, bool distilled)
    {
        using var scope = torch.NewDisposeScope();
        using var unet = TinyXl(12, distilled);
        if (distilled) Assert.Equal([[1, 3], [1, 1]], unet.Config.UpTransformerDepths);
        var path = Export(unet, new OnnxExportOptions { Attention = attention });
        CheckFile(path, attention);
        var structure = OnnxFile.ReadStructure(path);
        Assert.Equal(["sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids"], structure.Graph.Input.Select(i => i.Name));

        using var g = new Generator(5);
        var sample = torch.Randn([2, 4, 8, 8], g);
        var context = torch.Randn([2, 77, 32], g);
        var textEmbeds = torch.Randn([2, 16], g);
        var timeIds = torch.Tensor([64f, 64, 0, 0, 64, 64, 128, 96, 16, 8, 64, 64]).Reshape(2, 6);
        var expected = Reference(unet, sample, torch.Scalar(999.0, DType.Float32), context, new UNetAddedConditions(textEmbeds, timeIds));
        var actual = Run(path, new()
        {
            ["sample"] = sample,
            ["encoder_hidden_states"] = context,
            ["text_embeds"] = textEmbeds,
            ["time_ids"] = timeIds,
        }, [999f], []);
        AssertClose(expected, actual, Float32Tolerance);
    }

    [Fact]
    public void ForcedExternalDataLoadsAndGivesTheSameOutput()
    {
        using var scope = torch.NewDisposeScope();
        var unet = LoadTinyUnet();
        var inline = Export(unet, new OnnxExportOptions(), "inline");
        var external = Export(unet, new OnnxExportOptions(), "external", forceExternal: true);
        var dataFile = Path.Combine(Path.GetDirectoryName(external)!, "model.onnx_data");
        Assert.True(File.Exists(dataFile));
        // The weights moved out: the model file keeps only the graph and the small constants.
        Assert.True(new FileInfo(external).Length < new FileInfo(inline).Length / 10, "the weights were not moved to model.onnx_data");
        OnnxChecker.AssertValid(external);

        using var g = new Generator(6);
        var inputs = new Dictionary<string, Tensor> { ["sample"] = torch.Randn([1, 4, 8, 8], g), ["encoder_hidden_states"] = torch.Randn([1, 77, 32], g) };
        Assert.Equal(Run(inline, inputs, [500f], []), Run(external, inputs, [500f], []));
    }

    /// <summary>
    /// fp16 weights and math. Tolerance from fp16's epsilon ε = 2⁻¹⁰: the inputs, every weight and every intermediate are
    /// rounded to within ε/2 relatively, and GroupNorm renormalises between the layers, so the rounding errors add up along
    /// the path rather than grow: the output stays within a few ε of its scale (measured: 0.8 ε · max|y| on this model). The
    /// bound, 8 ε · max|y|, leaves room for other CPUs' summation orders and fails a wrong graph (a wrong value is O(max|y|)).
    /// </summary>
    [Fact]
    public void Float16BuildRunsWithinFp16Precision()
    {
        using var scope = torch.NewDisposeScope();
        var unet = LoadTinyUnet();
        var path = Export(unet, new OnnxExportOptions { Precision = OnnxPrecision.Float16 });
        CheckFile(path, AttentionForm.Standard);
        var structure = OnnxFile.ReadStructure(path);
        var types = structure.Graph.Input.Concat(structure.Graph.Output).ToDictionary(v => v.Name, v => (DataType)v.Type.TensorType.ElemType);
        Assert.Equal(DataType.Float16, types["sample"]);
        Assert.Equal(DataType.Float16, types["encoder_hidden_states"]);
        Assert.Equal(DataType.Float16, types["out_sample"]);
        Assert.Equal(DataType.Float, types["timestep"]);
        Assert.All(structure.Graph.Initializer.Where(t => t.Name.EndsWith(".weight", StringComparison.Ordinal)),
            t => Assert.Equal((int)DataType.Float16, t.DataType));

        using var g = new Generator(7);
        var sample = torch.Randn([2, 4, 8, 8], g);
        var context = torch.Randn([2, 77, 32], g);
        var expected = Reference(unet, sample, torch.Scalar(421.0, DType.Float32), context);
        var actual = Run(path, new() { ["sample"] = sample, ["encoder_hidden_states"] = context }, [421f], [], half: true);
        var scale = expected.Max(Math.Abs);
        AssertClose(expected, actual, 8 * Math.Pow(2, -10) * scale);
    }

    // ---- helpers ----

    private string Export(UNet2DConditionModel unet, OnnxExportOptions options, string name = "unet", bool forceExternal = false)
    {
        var path = Path.Combine(folder, name, "model.onnx");
        OnnxFile.Save(UNetOnnx.Build(unet, options), path, forceExternal: forceExternal);
        return path;
    }

    /// <summary>
    /// The standard form passes ONNX's full check and strict shape inference, every node. The fused form passes too, but
    /// checks less: ONNX's checker (1.12) has no schemas for com.microsoft, skips those nodes (an op name that does not
    /// exist there passes as well) and shape inference stops at them, so the MultiHeadAttention nodes and the types after
    /// them are checked only by ONNX Runtime running the file, which the tests do.
    /// </summary>
    private static void CheckFile(string path, AttentionForm attention)
    {
        OnnxChecker.AssertValid(path);
        var ops = OnnxFile.ReadStructure(path).Graph.Node.Select(n => (n.Domain, n.OpType)).ToHashSet();
        Assert.Equal(attention == AttentionForm.OnnxRuntimeFused, ops.Contains((OnnxGraph.MicrosoftDomain, "MultiHeadAttention")));
        Assert.Equal(attention == AttentionForm.Standard, ops.Contains(("", "Softmax")));
    }

    private static float[] Reference(UNet2DConditionModel unet, Tensor sample, Tensor timestep, Tensor context, UNetAddedConditions? added = null)
    {
        using var inference = Autograd.InferenceMode();
        using var output = unet.Forward(sample, timestep, context, added);
        return output.ToArray<float>();
    }

    private static float[] Run(string path, Dictionary<string, Tensor> inputs, float[] timestep, long[] timestepShape, bool half = false)
    {
        using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
        using var session = new InferenceSession(path, options);
        var values = new List<OrtValue>();
        try
        {
            var names = new List<string>();
            foreach (var (name, tensor) in inputs)
            {
                names.Add(name);
                var data = tensor.Contiguous().ToArray<float>();
                values.Add(half
                    ? OrtValue.CreateTensorValueFromMemory(data.Select(ToHalf).ToArray(), tensor.Shape)
                    : OrtValue.CreateTensorValueFromMemory(data, tensor.Shape));
            }
            names.Add("timestep");
            values.Add(OrtValue.CreateTensorValueFromMemory(timestep, timestepShape));
            using var runOptions = new RunOptions();
            using var results = session.Run(runOptions, names, values, ["out_sample"]);
            return half
                ? [.. results[0].GetTensorDataAsSpan<Float16>().ToArray().Select(h => (float)BitConverter.UInt16BitsToHalf(h.value))]
                : results[0].GetTensorDataAsSpan<float>().ToArray();
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }

    private static Float16 ToHalf(float f) => new(BitConverter.HalfToUInt16Bits((Half)f));

    private void AssertClose(float[] expected, float[] actual, double tolerance)
    {
        Assert.Equal(expected.Length, actual.Length);
        Assert.All(actual, a => Assert.True(float.IsFinite(a)));
        var maxDiff = expected.Zip(actual, (a, b) => Math.Abs((double)a - b)).Max();
        output.WriteLine($"max |libtorch - onnx| = {maxDiff:G3} (bound {tolerance:G3}, max |libtorch| {expected.Max(Math.Abs):G3})");
        Assert.True(maxDiff <= tolerance, $"max |libtorch - onnx| = {maxDiff:G3} > {tolerance:G3}");
    }
}
