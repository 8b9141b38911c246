using Onnx;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Onnx.Graphs;
using SdAppliance.Torch;
using DataType = Onnx.TensorProto.Types.DataType;

namespace SdAppliance.Onnx.Export;

/// <summary>
/// A CLIP text encoder (SD 1.x/2.x <c>text_encoder</c>, SDXL's two) as an ONNX graph, built as
/// <see cref="ClipTextModel.Forward"/> computes, with optimum's interface:
/// <list type="bullet">
/// <item><c>input_ids</c> [batch_size, sequence_length]: int64 (optimum) or int32 (diffusers' ONNX pipeline);</item>
/// <item><c>CLIPTextModel</c>: <c>last_hidden_state</c>, <c>pooler_output</c>; <c>CLIPTextModelWithProjection</c>
/// (SDXL's <c>text_encoder_2</c>): <c>text_embeds</c>, <c>last_hidden_state</c>; then, for both, <c>hidden_states.0</c>
/// (the embeddings) … <c>hidden_states.N</c> (layer N's raw output), as optimum's <c>output_hidden_states</c> export
/// names them (SDXL pipelines take <c>hidden_states.{N-1}</c>).</item>
/// </list>
/// Float outputs have the graph's float type (fp16 exports give fp16 outputs, as optimum's and diffusers' do).
/// Weights are initializers under their state-dict keys (Linear weights transposed, as <c>KEY.T</c>), so
/// <c>text_model.final_layer_norm.weight</c>/<c>.bias</c> can be read from the file: CLIP skip n &gt; 1 on SD 1.x is
/// <c>LayerNorm(hidden_states.{N+1-n})</c> with those weights and the config's <c>layer_norm_eps</c>
/// (A1111's rule, as <see cref="ClipPromptEncoder"/>; n = 1 is <c>last_hidden_state</c>). SDXL takes
/// <c>hidden_states.{N-n}</c> as it is, no layer norm (<see cref="SdxlPromptEncoder"/>).
/// </summary>
public static class ClipTextEncoderOnnx
{
    private const string Embeddings = "text_model.embeddings";
    private const string TokenEmbedding = Embeddings + ".token_embedding.weight";

    /// <summary>The initializers of the final layer norm (for clip skip &gt; 1 on SD 1.x/2.x, see the class summary).</summary>
    public const string FinalLayerNormWeight = FinalLayerNorm + ".weight";
    public const string FinalLayerNormBias = FinalLayerNorm + ".bias";
    private const string FinalLayerNorm = "text_model.final_layer_norm";

    /// <summary>The output of hidden state <paramref name="index"/> (0: the embeddings, i: layer i's raw output).</summary>
    public static string HiddenStatesOutput(int index) => $"hidden_states.{index}";

    /// <param name="weightOverrides">State-dict entries that replace the model's (the token embedding table extended by
    /// <see cref="TextualInversionBake"/>); rows past the config's <c>vocab_size</c> are baked-in tokens.</param>
    public static ModelProto Build(ClipTextModel model, OnnxExportOptions options, IReadOnlyDictionary<string, Tensor>? weightOverrides = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        var config = model.Config;
        using var stateDict = model.StateDict();
        var weights = new Dictionary<string, Tensor>(stateDict, StringComparer.Ordinal);
        foreach (var (key, value) in weightOverrides ?? new Dictionary<string, Tensor>())
        {
            if (!weights.TryGetValue(key, out var own))
                throw new ArgumentException($"the override '{key}' is not a weight of this text encoder", nameof(weightOverrides));
            if (own.Dim != value.Dim || (key != TokenEmbedding ? !own.Shape.SequenceEqual(value.Shape) : own.Size(1) != value.Size(1)))
                throw new ArgumentException($"the override '{key}' is [{string.Join(", ", value.Shape)}], the model's [{string.Join(", ", own.Shape)}]", nameof(weightOverrides));
            weights[key] = value;
        }

        var floatType = options.Precision == OnnxPrecision.Float16 ? DataType.Float16 : DataType.Float;
        var graph = new OnnxGraph(model.WithProjection ? "clip_text_model_with_projection" : "clip_text_model", floatType);
        var layers = new Layers(graph, weights, options.Attention);
        var idType = options.Layout == OnnxLayout.Optimum ? DataType.Int64 : DataType.Int32;
        var inputIds = graph.Input("input_ids", idType, "batch_size", "sequence_length");

        // CLIPTextEmbeddings: token rows plus the first L position rows.
        var length = graph.Op("Shape", [inputIds], ("start", 1L), ("end", 2L));
        var tokens = graph.Op("Gather", [layers.Weight(TokenEmbedding), inputIds], ("axis", 0L));
        var positions = graph.Op("Slice", [layers.Weight(Embeddings + ".position_embedding.weight"), graph.Int64s(0), length, graph.Int64s(0)]);
        var x = layers.Add(tokens, positions);

        var mask = CausalMask(graph, config.MaxPositionEmbeddings, length);
        var hiddenStates = new List<string> { x };
        for (var i = 0; i < config.NumHiddenLayers; i++)
        {
            x = EncoderLayer(layers, x, $"text_model.encoder.layers.{i}", config, mask);
            hiddenStates.Add(x);
        }
        var lastHiddenState = layers.LayerNorm(x, FinalLayerNorm, config.LayerNormEps);
        var pooled = Pool(graph, lastHiddenState, inputIds, config, addedTokens: layers.Tensor(TokenEmbedding).Size(0) > config.VocabSize);

        Dim batch = "batch_size", sequence = "sequence_length";
        if (model.WithProjection)
        {
            graph.Output("text_embeds", layers.Linear(pooled, "text_projection"), floatType, batch, config.ProjectionDim);
            graph.Output("last_hidden_state", lastHiddenState, floatType, batch, sequence, config.HiddenSize);
        }
        else
        {
            graph.Output("last_hidden_state", lastHiddenState, floatType, batch, sequence, config.HiddenSize);
            graph.Output("pooler_output", pooled, floatType, batch, config.HiddenSize);
        }
        for (var i = 0; i < hiddenStates.Count; i++)
            graph.Output(HiddenStatesOutput(i), hiddenStates[i], floatType, batch, sequence, config.HiddenSize);
        return graph.ToModel(opset: options.Opset);
    }

    /// <summary>
    /// The additive causal mask [L, L]: 0 where token i may see token j (j ≤ i), the float type's lowest value above
    /// (HF's finfo.min: finite, so no row of the softmax can turn into NaN). Built once for max_position_embeddings, sliced to L.
    /// </summary>
    private static string CausalMask(OnnxGraph graph, int maxLength, string length)
    {
        var blocked = graph.FloatType == DataType.Float16 ? -65504f : float.MinValue;
        var values = new float[maxLength * maxLength];
        for (var i = 0; i < maxLength; i++)
            for (var j = i + 1; j < maxLength; j++)
                values[i * maxLength + j] = blocked;
        using var full = torch.Tensor(values, maxLength, maxLength);
        var mask = graph.Initializer("text_model.causal_mask", full);
        var ends = graph.Op("Concat", [length, length], ("axis", 0L));
        return graph.Op("Slice", [mask, graph.Int64s(0, 0), ends, graph.Int64s(0, 1)]);
    }

    /// <summary><c>CLIPEncoderLayer</c>: pre-LayerNorm causal self-attention and MLP, each added back.</summary>
    private static string EncoderLayer(Layers layers, string x, string prefix, ClipTextConfig config, string mask)
    {
        var h = layers.LayerNorm(x, prefix + ".layer_norm1", config.LayerNormEps);
        var attention = prefix + ".self_attn";
        var q = layers.Linear(h, attention + ".q_proj");
        var k = layers.Linear(h, attention + ".k_proj");
        var v = layers.Linear(h, attention + ".v_proj");
        h = layers.ScaledDotProductAttention(q, k, v, config.NumAttentionHeads, config.HeadDim, mask);
        x = layers.Add(x, layers.Linear(h, attention + ".out_proj"));

        h = layers.LayerNorm(x, prefix + ".layer_norm2", config.LayerNormEps);
        h = layers.Linear(h, prefix + ".mlp.fc1");
        h = Activation(layers, h, config.HiddenAct);
        return layers.Add(x, layers.Linear(h, prefix + ".mlp.fc2"));
    }

    /// <summary>The function HF's ACT2FN maps hidden_act to (the names <see cref="ClipMlp.Activation"/> accepts).</summary>
    private static string Activation(Layers layers, string x, string hiddenAct) => hiddenAct switch
    {
        "quick_gelu" => layers.QuickGelu(x),
        "gelu" => layers.Gelu(x),
        "gelu_new" or "gelu_pytorch_tanh" => TanhGelu(layers.Graph, x),
        _ => throw new NotSupportedException($"hidden_act '{hiddenAct}' is not supported: use quick_gelu, gelu, gelu_new or gelu_pytorch_tanh"),
    };

    // PyTorch's gelu(approximate='tanh'): x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³))).
    private static string TanhGelu(OnnxGraph g, string x)
    {
        var cube = g.Op("Mul", [g.Op("Mul", [x, x]), x]);
        var inner = g.Op("Mul", [g.Op("Add", [x, g.Op("Mul", [cube, g.Scalar(0.044715)])]), g.Scalar(Math.Sqrt(2 / Math.PI))]);
        return g.Op("Mul", [g.Op("Mul", [x, g.Op("Add", [g.Op("Tanh", [inner]), g.Scalar(1)])]), g.Scalar(0.5)]);
    }

    /// <summary>
    /// <see cref="ClipTextModel.Pool"/>: each row's hidden state at <see cref="ClipTextModel.EosPositions"/>. Configs with
    /// the legacy eos_token_id 2 take the argmax of the ids (the first &lt;|endoftext|&gt;, the largest vocabulary id);
    /// baked-in tokens (ids past vocab_size) count as 0 there, as the placeholder ids of our libtorch encoder's token
    /// overrides do, so a textual inversion does not move the pooled position onto itself. Other configs take the first
    /// position of eos_token_id (0 when there is none). ArgMax runs on int32, which every runtime has a kernel for.
    /// </summary>
    private static string Pool(OnnxGraph graph, string lastHiddenState, string inputIds, ClipTextConfig config, bool addedTokens)
    {
        var ids = graph.Op("Cast", [inputIds], ("to", (long)DataType.Int32));
        string keys;
        if (config.EosTokenId == 2)
        {
            keys = ids;
            if (addedTokens)
            {
                var zero = graph.Op("Cast", [graph.Int64s([], [0])], ("to", (long)DataType.Int32));
                var vocab = graph.Op("Cast", [graph.Int64s([], [config.VocabSize])], ("to", (long)DataType.Int32));
                keys = graph.Op("Where", [graph.Op("Less", [ids, vocab]), ids, zero]);
            }
        }
        else
        {
            var eos = graph.Op("Cast", [graph.Int64s([], [config.EosTokenId])], ("to", (long)DataType.Int32));
            keys = graph.Op("Cast", [graph.Op("Equal", [ids, eos])], ("to", (long)DataType.Int32));
        }
        var positions = graph.Op("ArgMax", [keys], ("axis", -1L), ("keepdims", 0L), ("select_last_index", 0L));
        var index = graph.Op("Unsqueeze", [positions, graph.Int64s(-1)]);
        return graph.Op("GatherND", [lastHiddenState, index], ("batch_dims", 1L));
    }
}
