using SdAppliance.Models.Loading;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Tokenization;
using SdAppliance.Onnx.Export;
using SdAppliance.Onnx.Graphs;
using SdAppliance.Torch;
using DataType = Onnx.TensorProto.Types.DataType;

namespace SdAppliance.Onnx.Tests;

/// <summary>
/// The CLIP text encoders exported by <see cref="ClipTextEncoderOnnx"/>: every output of the ONNX Runtime CPU run
/// within 1e-4 of our libtorch <see cref="ClipTextModel"/> (float32), on the tiny fixture's encoder (eos_token_id
/// pooling) and on a small SDXL-shaped pair (the legacy argmax pooling, gelu, the projection).
/// </summary>
public sealed class TextEncoderExportTests : IDisposable
{
    private const double Tolerance = 1e-4; // the issue's
    private static readonly string TinySd = Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sd");
    private readonly string folder = Directory.CreateTempSubdirectory("sdapp-onnx-text-").FullName;

    public void Dispose() => Directory.Delete(folder, recursive: true);

    /// <summary>SDXL's text_encoder shape, small: CLIP-L style (quick_gelu), released token ids (eos_token_id 2: argmax pooling).</summary>
    internal static ClipTextConfig SdxlClipL => new()
    {
        VocabSize = 914, HiddenSize = 32, IntermediateSize = 64, NumHiddenLayers = 3, NumAttentionHeads = 4, ProjectionDim = 32,
        HiddenAct = "quick_gelu", BosTokenId = 0, EosTokenId = 2, PadTokenId = 1,
    };

    /// <summary>SDXL's text_encoder_2 shape, small: OpenCLIP-bigG style (gelu, text_projection).</summary>
    internal static ClipTextConfig SdxlClipG => new()
    {
        VocabSize = 914, HiddenSize = 48, IntermediateSize = 96, NumHiddenLayers = 4, NumAttentionHeads = 4, ProjectionDim = 40,
        HiddenAct = "gelu", BosTokenId = 0, EosTokenId = 2, PadTokenId = 1,
    };

    /// <summary>A text encoder with random weights, its layer norms too (libtorch initialises those to 1 and 0, which would hide a swapped weight and bias).</summary>
    internal static ClipTextModel RandomEncoder(ClipTextConfig config, bool withProjection, int seed)
    {
        var model = new ClipTextModel(config, withProjection);
        using var g = new Generator((ulong)seed);
        using var _ = Autograd.NoGrad();
        using var scope = torch.NewDisposeScope();
        foreach (var (name, p) in model.NamedParameters())
        {
            if (name.Contains("norm", StringComparison.Ordinal))
                p.Copy_(name.EndsWith(".weight", StringComparison.Ordinal) ? torch.Randn(p.Shape, g) * 0.2 + 1 : torch.Randn(p.Shape, g) * 0.2);
            else if (name.EndsWith(".bias", StringComparison.Ordinal))
                p.Copy_(torch.Randn(p.Shape, g) * 0.1);
        }
        return model;
    }

    /// <summary>Token ids as the pipelines feed them: prompts through the fixture tokenizer, padded to 77.</summary>
    internal static Tensor PromptIds(ClipTokenizer tokenizer, params string[] prompts) =>
        torch.Tensor(prompts.SelectMany(p => tokenizer.EncodeForModel(p)).Select(i => (long)i).ToArray(), prompts.Length, tokenizer.ModelMaxLength);

    /// <summary>Asserts every output of <paramref name="actual"/> against libtorch's, by optimum's names and in optimum's order.</summary>
    internal static void AssertMatches(List<(string Name, ExportRuns.Output Value)> actual, ClipTextModel model, ClipTextOutput expected, double tolerance)
    {
        var layers = model.Config.NumHiddenLayers;
        string[] head = model.WithProjection ? ["text_embeds", "last_hidden_state"] : ["last_hidden_state", "pooler_output"];
        Assert.Equal([.. head, .. Enumerable.Range(0, layers + 1).Select(i => $"hidden_states.{i}")], actual.Select(a => a.Name));
        var byName = actual.ToDictionary(a => a.Name, a => a.Value);
        var wanted = new List<(string, Tensor)>
        {
            ("last_hidden_state", expected.LastHiddenState),
            model.WithProjection ? ("text_embeds", expected.TextEmbeds!) : ("pooler_output", expected.PooledOutput),
        };
        wanted.AddRange(expected.HiddenStates.Select((h, i) => ($"hidden_states.{i}", h)));
        foreach (var (name, tensor) in wanted)
        {
            var diff = ExportRuns.MaxDiff(byName[name], tensor, name);
            Assert.True(diff <= tolerance, $"{name}: max |ONNX − libtorch| = {diff:g3} > {tolerance:g3}");
        }
    }

    [Theory]
    [InlineData(OnnxLayout.Optimum)]
    [InlineData(OnnxLayout.Diffusers)]
    public void TinyFixtureEncoderMatchesLibtorch(OnnxLayout layout)
    {
        using var model = ModelLoader.Load(TinySd);
        var path = ExportRuns.SaveChecked(ClipTextEncoderOnnx.Build(model.TextEncoder, new OnnxExportOptions { Layout = layout }), folder, "text_encoder");

        var structure = OnnxFile.ReadStructure(path);
        var idType = layout == OnnxLayout.Optimum ? DataType.Int64 : DataType.Int32;
        Assert.Equal((int)idType, structure.Graph.Input.Single(i => i.Name == "input_ids").Type.TensorType.ElemType);
        // The runtime computes clip skip from hidden_states.k and the final layer norm, found by their state-dict names.
        Assert.Contains(structure.Graph.Initializer, t => t.Name == ClipTextEncoderOnnx.FinalLayerNormWeight);
        Assert.Contains(structure.Graph.Initializer, t => t.Name == ClipTextEncoderOnnx.FinalLayerNormBias);
        Assert.Contains(structure.Graph.Initializer, t => t.Name == "text_model.embeddings.token_embedding.weight");

        using var scope = torch.NewDisposeScope();
        var ids = PromptIds(model.Tokenizer, "a photo of an astronaut riding a horse", "");
        using var expected = model.TextEncoder.Forward(ids);
        AssertMatches(ExportRuns.Run(path, ("input_ids", ids)), model.TextEncoder, expected, Tolerance);
    }

    [Fact]
    public void DemoModelEncoderMatchesLibtorch()
    {
        using var demo = ModelLoader.Load(ExportRuns.DemoModel);
        var path = ExportRuns.SaveChecked(ClipTextEncoderOnnx.Build(demo.TextEncoder, new OnnxExportOptions()), folder, "text_encoder");
        using var scope = torch.NewDisposeScope();
        var ids = PromptIds(demo.Tokenizer, "a red circle on a blue background", "a green square");
        using var expected = demo.TextEncoder.Forward(ids);
        AssertMatches(ExportRuns.Run(path, ("input_ids", ids)), demo.TextEncoder, expected, Tolerance);
    }

    /// <summary>
    /// Clip skip 2 as a runtime computes it from the export: LayerNorm(hidden_states.{N-1}) with the final layer norm's
    /// initializers read from the file, against <see cref="ClipPromptEncoder.EncodeChunks"/>.
    /// </summary>
    [Fact]
    public void ClipSkipComesFromAHiddenStateAndTheFinalLayerNormInTheFile()
    {
        using var demo = ModelLoader.Load(ExportRuns.DemoModel);
        var path = ExportRuns.SaveChecked(ClipTextEncoderOnnx.Build(demo.TextEncoder, new OnnxExportOptions()), folder, "text_encoder");
        var initializers = OnnxFile.ReadStructure(path).Graph.Initializer;
        float[] Floats(string name) => [.. System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(initializers.Single(t => t.Name == name).RawData.Span)];
        var (gamma, beta) = (Floats(ClipTextEncoderOnnx.FinalLayerNormWeight), Floats(ClipTextEncoderOnnx.FinalLayerNormBias));

        using var scope = torch.NewDisposeScope();
        var ids = PromptIds(demo.Tokenizer, "a small yellow star in the top left");
        var layers = demo.TextEncoder.Config.NumHiddenLayers;
        var hidden = ExportRuns.Run(path, ("input_ids", ids)).Single(o => o.Name == ClipTextEncoderOnnx.HiddenStatesOutput(layers - 1)).Value;
        var width = gamma.Length;
        var skipped = new float[hidden.Values.Length];
        for (var row = 0; row < hidden.Values.Length / width; row++)
        {
            var x = hidden.Values.AsSpan(row * width, width);
            var mean = 0.0;
            foreach (var v in x) mean += v;
            mean /= width;
            var variance = 0.0;
            foreach (var v in x) variance += (v - mean) * (v - mean);
            variance /= width;
            for (var i = 0; i < width; i++)
                skipped[row * width + i] = (float)((x[i] - mean) / Math.Sqrt(variance + demo.TextEncoder.Config.LayerNormEps) * gamma[i] + beta[i]);
        }
        var expected = new ClipPromptEncoder(demo.TextEncoder).EncodeChunks(ids, clipSkip: 2);
        var diff = ExportRuns.MaxDiff(hidden with { Values = skipped }, expected, "clip skip 2");
        Assert.True(diff <= Tolerance, $"clip skip 2: max |ONNX − libtorch| = {diff:g3}");
    }

    [Fact]
    public void SequencesShorterThanTheModelLengthUseTheirPositionsAndMask()
    {
        using var model = ModelLoader.Load(TinySd);
        var path = ExportRuns.SaveChecked(ClipTextEncoderOnnx.Build(model.TextEncoder, new OnnxExportOptions()), folder, "text_encoder");
        using var scope = torch.NewDisposeScope();
        // 9 tokens, no padding: the end token's row is the pooled one, and the mask is the 9×9 corner.
        var prompt = model.Tokenizer.Encode("red fox in snow");
        long[] tokens = [model.Tokenizer.BosId, .. prompt.Select(i => (long)i), model.Tokenizer.EosId];
        var ids = torch.Tensor(tokens, 1, tokens.Length);
        using var expected = model.TextEncoder.Forward(ids);
        AssertMatches(ExportRuns.Run(path, ("input_ids", ids)), model.TextEncoder, expected, Tolerance);
    }

    [Theory]
    [InlineData("quick_gelu", false)]
    [InlineData("gelu", true)]
    [InlineData("gelu_pytorch_tanh", true)]
    public void SdxlShapedEncodersMatchLibtorch(string hiddenAct, bool withProjection)
    {
        var config = (withProjection ? SdxlClipG : SdxlClipL) with { HiddenAct = hiddenAct };
        using var model = RandomEncoder(config, withProjection, seed: 11);
        var path = ExportRuns.SaveChecked(ClipTextEncoderOnnx.Build(model, new OnnxExportOptions()), folder, withProjection ? "text_encoder_2" : "text_encoder");

        using var scope = torch.NewDisposeScope();
        var tokenizer = ClipTokenizer.FromFolder(Path.Combine(TinySd, "tokenizer"), new ClipTokenizerOptions(PadToken: "!"));
        var ids = PromptIds(tokenizer, "a watercolor of a lighthouse at dusk, soft light", "cat");
        using var expected = model.Forward(ids);
        AssertMatches(ExportRuns.Run(path, ("input_ids", ids)), model, expected, Tolerance);
    }

    [Fact]
    public void Float16BuildPassesTheCheckerAndRunsWithinHalfPrecision()
    {
        using var model = RandomEncoder(SdxlClipG, withProjection: true, seed: 5);
        var built = ClipTextEncoderOnnx.Build(model, new OnnxExportOptions { Precision = OnnxPrecision.Float16 });
        var path = ExportRuns.SaveChecked(built, folder, "text_encoder_2");
        Assert.All(built.Graph.Output, o => Assert.Equal((int)DataType.Float16, o.Type.TensorType.ElemType));

        using var scope = torch.NewDisposeScope();
        var tokenizer = ClipTokenizer.FromFolder(Path.Combine(TinySd, "tokenizer"), new ClipTokenizerOptions(PadToken: "!"));
        var ids = PromptIds(tokenizer, "a castle on a hill");
        using var expected = model.Forward(ids);
        var actual = ExportRuns.Run(path, ("input_ids", ids));
        Assert.All(actual, a => Assert.Equal(Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float16, a.Value.Type));
        var byName = actual.ToDictionary(a => a.Name, a => a.Value);
        foreach (var (name, tensor) in new[] { ("last_hidden_state", expected.LastHiddenState), ("text_embeds", expected.TextEmbeds!), ("hidden_states.3", expected.HiddenStates[3]) })
        {
            var tolerance = ExportRuns.Float16Tolerance(built, ExportRuns.MaxAbs(tensor));
            var diff = ExportRuns.MaxDiff(byName[name], tensor, name);
            Assert.True(diff <= tolerance, $"{name}: max |fp16 ONNX − fp32 libtorch| = {diff:g3} > {tolerance:g3}");
        }
    }
}
