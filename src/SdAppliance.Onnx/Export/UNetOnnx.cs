using Onnx;
using SdAppliance.Models.Unet;
using SdAppliance.Onnx.Graphs;
using SdAppliance.Torch;
using DataType = Onnx.TensorProto.Types.DataType;

namespace SdAppliance.Onnx.Export;

/// <summary>
/// The UNet (SD 1.x/2.x, SDXL with text_embeds/time_ids) as an ONNX graph, written module by module
/// in the order <see cref="UNet2DConditionModel.Forward(Tensor, Tensor, Tensor, UNetAddedConditions?, Tensor?, IReadOnlyList{Tensor}?, Tensor?)"/>
/// runs them, with the weights under their state-dict names.
/// <para>
/// IO, in the graph's float type (float32, or float16 with <see cref="OnnxPrecision.Float16"/>):
/// <c>sample</c> [batch, in_channels, height, width], <c>encoder_hidden_states</c> [batch, sequence, cross_attention_dim],
/// SDXL's <c>text_embeds</c> [batch, pooled_dim] and <c>time_ids</c> [batch, 6] → <c>out_sample</c> [batch, out_channels, height, width].
/// <c>timestep</c> is float32 in both precisions (fractional timesteps of the Karras samplers stay exact), rank 0 in
/// optimum's layout (its exporter declares a scalar) and [timestep_batch] in diffusers' (its pipeline feeds
/// <c>np.array([t], dtype=the session's timestep type)</c>, shape [1]); either is broadcast over the batch inside the graph.
/// The sinusoidal features are computed in float32 in both precisions, as diffusers does.
/// </para>
/// </summary>
public static class UNetOnnx
{
    public static ModelProto Build(UNet2DConditionModel unet, OnnxExportOptions options)
    {
        ArgumentNullException.ThrowIfNull(unet);
        ArgumentNullException.ThrowIfNull(options);
        using var weights = unet.StateDict();
        var floatType = options.Precision == OnnxPrecision.Float16 ? DataType.Float16 : DataType.Float;
        var graph = new OnnxGraph("unet", floatType);
        new Builder(unet.Config, new Layers(graph, weights, options.Attention), options.Layout).Build();
        return graph.ToModel(opset: options.Opset);
    }

    private sealed class Builder(UNet2DConditionConfig config, Layers layers, OnnxLayout layout)
    {
        private readonly OnnxGraph graph = layers.Graph;
        private readonly long groups = config.NormNumGroups!.Value;

        /// <summary>act(temb), which every resnet's time_emb_proj takes: computed once.</summary>
        private string actTemb = "";
        private string context = "";

        public void Build()
        {
            var f = graph.FloatType;
            var sample = graph.Input("sample", f, "batch", config.InChannels, "height", "width");
            var timestep = layout == OnnxLayout.Optimum
                ? graph.Input("timestep", DataType.Float)
                : graph.Input("timestep", DataType.Float, "timestep_batch");
            context = graph.Input("encoder_hidden_states", f, "batch", "sequence", config.CrossAttentionDimPerBlock[0]);

            var emb = TimeEmbedding(sample, timestep);
            actTemb = Act(emb);

            if (config.CenterInputSample) sample = graph.Op("Sub", [graph.Op("Mul", [sample, graph.Scalar(2)]), graph.Scalar(1)]);
            var h = layers.Conv2d(sample, "conv_in", padding: (config.ConvInKernel - 1) / 2);

            var skips = new List<string> { h };
            for (var i = 0; i < config.NumBlocks; i++)
                h = DownBlock(h, i, skips);

            h = MidBlock(h);

            for (var i = 0; i < config.NumBlocks; i++)
                h = UpBlock(h, i, skips);

            h = layers.GroupNorm(h, "conv_norm_out", groups, config.NormEps);
            h = Act(h);
            h = layers.Conv2d(h, "conv_out", padding: (config.ConvOutKernel - 1) / 2);
            graph.Output("out_sample", h, f, "batch", config.OutChannels, "height", "width");
        }

        // ---- time embedding ----

        /// <summary>time_embedding(time_proj(t)) (+ SDXL's add_embedding of [text_embeds, add_time_proj(time_ids)]): [batch, time_embed_dim].</summary>
        private string TimeEmbedding(string sample, string timestep)
        {
            // Rank 0, [1] or [batch] → [batch]: Expand broadcasts a single step over the batch.
            var flat = graph.Op("Reshape", [timestep, graph.Int64s(-1)]);
            var batch = graph.Op("Slice", [graph.Op("Shape", [sample]), graph.Int64s(0), graph.Int64s(1)]);
            var steps = graph.Op("Expand", [flat, batch]);
            var tEmb = layers.CastToCompute(Sinusoid(steps, config.BlockOutChannels[0], "time_proj"), DataType.Float);
            var emb = TimestepEmbedding(tEmb, "time_embedding");
            if (config.AdditionEmbedType != "text_time") return emb;

            var addDim = config.AdditionTimeEmbedDim!.Value;
            const long TimeIds = 6;
            var textDim = config.ProjectionClassEmbeddingsInputDim!.Value - TimeIds * addDim;
            var textEmbeds = graph.Input("text_embeds", graph.FloatType, "batch", textDim);
            var timeIds = graph.Input("time_ids", graph.FloatType, "batch", TimeIds);
            var ids = graph.Op("Reshape", [FromCompute(timeIds), graph.Int64s(-1)]);
            var timeEmbeds = graph.Op("Reshape", [Sinusoid(ids, addDim, "add_time_proj"), graph.Int64s(-1, TimeIds * addDim)]);
            var addEmbeds = graph.Op("Concat", [textEmbeds, layers.CastToCompute(timeEmbeds, DataType.Float)], ("axis", -1L));
            return layers.Add(emb, TimestepEmbedding(addEmbeds, "add_embedding"));
        }

        /// <summary>A compute-typed value as float32 (a no-op in a float32 graph).</summary>
        private string FromCompute(string x) => graph.FloatType == DataType.Float ? x : graph.Op("Cast", [x], ("to", (long)DataType.Float));

        /// <summary>
        /// diffusers' <c>Timesteps</c> on float32 steps [N] → [N, channels] float32. The frequencies are computed by
        /// libtorch with the very operations of our module and stored, so they agree to the bit.
        /// </summary>
        private string Sinusoid(string steps, long channels, string name)
        {
            var half = channels / 2;
            using var exponent = torch.Arange(0, half, dtype: DType.Float32).Mul(-Math.Log(10000));
            using var scaled = exponent.Div(half - config.FreqShift);
            using var frequencies = scaled.Exp().Unsqueeze(0);
            var freqs = graph.Initializer($"{name}.frequencies", frequencies, DataType.Float);
            var args = graph.Op("Mul", [graph.Op("Unsqueeze", [steps, graph.Int64s(1)]), freqs]);
            var (sin, cos) = (graph.Op("Sin", [args]), graph.Op("Cos", [args]));
            var emb = graph.Op("Concat", config.FlipSinToCos ? [cos, sin] : [sin, cos], ("axis", -1L));
            return channels % 2 == 1 ? graph.Op("Pad", [emb, graph.Int64s(0, 0, 0, 1)]) : emb;
        }

        /// <summary>diffusers' <c>TimestepEmbedding</c>: linear_1 → act → linear_2.</summary>
        private string TimestepEmbedding(string x, string prefix) =>
            layers.Linear(Act(layers.Linear(x, prefix + ".linear_1")), prefix + ".linear_2");

        // ---- blocks ----

        private string DownBlock(string h, int i, List<string> skips)
        {
            var prefix = $"down_blocks.{i}";
            var crossAttention = config.DownBlockTypes[i] == "CrossAttnDownBlock2D";
            for (var j = 0; j < config.LayersPerBlockList[i]; j++)
            {
                h = Resnet(h, $"{prefix}.resnets.{j}");
                if (crossAttention) h = Transformer(h, $"{prefix}.attentions.{j}", config.HeadsPerBlock[i], config.OnlyCrossAttentionPerBlock[i]);
                skips.Add(h);
            }
            if (layers.Has($"{prefix}.downsamplers.0.conv.weight"))
            {
                // padding 0 is the LDM form: pad right and bottom only (the UNet's configs all say 1).
                if (config.DownsamplePadding == 0) h = graph.Op("Pad", [h, graph.Int64s(0, 0, 0, 0, 0, 0, 1, 1)]);
                h = layers.Conv2d(h, $"{prefix}.downsamplers.0.conv", stride: 2, padding: config.DownsamplePadding);
                skips.Add(h);
            }
            return h;
        }

        private string MidBlock(string h)
        {
            if (config.MidBlockType is null) return h;
            h = Resnet(h, "mid_block.resnets.0", config.MidBlockScaleFactor);
            for (var j = 0; layers.Has($"mid_block.resnets.{j + 1}.conv1.weight"); j++)
            {
                h = Transformer(h, $"mid_block.attentions.{j}", config.HeadsPerBlock[^1], onlyCrossAttention: false);
                h = Resnet(h, $"mid_block.resnets.{j + 1}", config.MidBlockScaleFactor);
            }
            return h;
        }

        /// <summary>Up block <paramref name="i"/> (deepest first) consumes one skip tensor per resnet, the last one first.</summary>
        private string UpBlock(string h, int i, List<string> skips)
        {
            var prefix = $"up_blocks.{i}";
            var block = config.NumBlocks - 1 - i;
            var crossAttention = config.UpBlockTypes[i] == "CrossAttnUpBlock2D";
            for (var j = 0; j < config.LayersPerBlockList[block] + 1; j++)
            {
                h = graph.Op("Concat", [h, skips[^1]], ("axis", 1L));
                skips.RemoveAt(skips.Count - 1);
                h = Resnet(h, $"{prefix}.resnets.{j}");
                if (crossAttention) h = Transformer(h, $"{prefix}.attentions.{j}", config.HeadsPerBlock[block], config.OnlyCrossAttentionPerBlock[block]);
            }
            if (layers.Has($"{prefix}.upsamplers.0.conv.weight"))
            {
                // Nearest to the size of the skip tensor the next level takes: 2x, or the rounded size of an odd input
                // (PyTorch's legacy nearest is ONNX's asymmetric coordinates with floor).
                var shape = graph.Op("Shape", [h]);
                var skipShape = graph.Op("Shape", [skips[^1]]);
                var sizes = graph.Op("Concat", [
                    graph.Op("Slice", [shape, graph.Int64s(0), graph.Int64s(2)]),
                    graph.Op("Slice", [skipShape, graph.Int64s(2), graph.Int64s(4)])], ("axis", 0L));
                h = graph.Op("Resize", [h, "", "", sizes],
                    ("mode", "nearest"), ("coordinate_transformation_mode", "asymmetric"), ("nearest_mode", "floor"));
                h = layers.Conv2d(h, $"{prefix}.upsamplers.0.conv", padding: 1);
            }
            return h;
        }

        // ---- modules ----

        /// <summary>diffusers' <c>ResnetBlock2D</c> (time_embedding_norm "default").</summary>
        private string Resnet(string x, string prefix, double outputScaleFactor = 1)
        {
            var h = layers.GroupNorm(x, prefix + ".norm1", groups, config.NormEps);
            h = layers.Conv2d(Act(h), prefix + ".conv1", padding: 1);
            var temb = graph.Op("Unsqueeze", [layers.Linear(actTemb, prefix + ".time_emb_proj"), graph.Int64s(2, 3)]);
            h = layers.Add(h, temb);
            h = layers.GroupNorm(h, prefix + ".norm2", groups, config.NormEps);
            h = layers.Conv2d(Act(h), prefix + ".conv2", padding: 1);
            var shortcut = layers.Has(prefix + ".conv_shortcut.weight") ? layers.Conv2d(x, prefix + ".conv_shortcut") : x;
            var output = layers.Add(shortcut, h);
            return outputScaleFactor == 1 ? output : graph.Op("Div", [output, graph.Scalar(outputScaleFactor)]);
        }

        /// <summary>diffusers' <c>Transformer2DModel</c>: group norm, proj_in (1×1 conv, or linear on tokens), the blocks, proj_out, plus the input.</summary>
        private string Transformer(string x, string prefix, long heads, bool onlyCrossAttention)
        {
            var channels = layers.Tensor(prefix + ".norm.weight").Size(0);
            var inner = layers.Tensor(prefix + ".proj_in.weight").Size(0);
            if (inner != channels)
                throw new NotSupportedException($"{prefix}: proj_in changes the width ({channels} → {inner}); no UNet of the supported families does");
            var linear = config.UseLinearProjection;
            var h = layers.GroupNorm(x, prefix + ".norm", groups, 1e-6);
            // [B, C, H, W] → tokens [B, H·W, C]. SD 1.x's 1×1 conv projections are the same per-pixel linear map, so
            // both kinds run as a MatMul on the tokens: a 1×1 Conv would make ONNX Runtime's CPU provider reorder the
            // image to its blocked layout and back, around each projection.
            h = layers.Transpose(layers.Reshape(h, 0, channels, -1), 0, 2, 1);
            h = linear ? layers.Linear(h, prefix + ".proj_in") : PointwiseConv(h, prefix + ".proj_in");

            for (var j = 0; layers.Has($"{prefix}.transformer_blocks.{j}.norm1.weight"); j++)
                h = TransformerBlock(h, $"{prefix}.transformer_blocks.{j}", heads, inner / heads, onlyCrossAttention);

            h = linear ? layers.Linear(h, prefix + ".proj_out") : PointwiseConv(h, prefix + ".proj_out");
            h = graph.Op("Reshape", [layers.Transpose(h, 0, 2, 1), graph.Op("Shape", [x])]);
            return layers.Add(h, x);
        }

        /// <summary>A 1×1 <c>nn.Conv2d</c> applied to tokens [B, N, in]: tokens · W[:, :, 0, 0]ᵀ + b.</summary>
        private string PointwiseConv(string tokens, string prefix)
        {
            var w = layers.Weight(prefix + ".weight", ".T", t => t.Reshape(t.Size(0), t.Size(1)).T().Contiguous());
            return layers.Add(graph.Op("MatMul", [tokens, w]), layers.Weight(prefix + ".bias"));
        }

        /// <summary>diffusers' <c>BasicTransformerBlock</c>: self-attention, cross-attention, GEGLU feed-forward, each pre-normed and residual.</summary>
        private string TransformerBlock(string h, string prefix, long heads, long dimHead, bool onlyCrossAttention)
        {
            var n = layers.LayerNorm(h, prefix + ".norm1", 1e-5);
            h = layers.Add(Attention(n, onlyCrossAttention ? context : n, prefix + ".attn1", heads, dimHead), h);
            if (layers.Has(prefix + ".attn2.to_q.weight"))
            {
                n = layers.LayerNorm(h, prefix + ".norm2", 1e-5);
                h = layers.Add(Attention(n, context, prefix + ".attn2", heads, dimHead), h);
            }
            n = layers.LayerNorm(h, prefix + ".norm3", 1e-5);
            return layers.Add(FeedForward(n, prefix + ".ff"), h);
        }

        /// <summary>diffusers' <c>Attention</c> on tokens: to_q of the queries, to_k/to_v of the context, attention, to_out.0.</summary>
        private string Attention(string x, string contextStates, string prefix, long heads, long dimHead)
        {
            var q = layers.Linear(x, prefix + ".to_q");
            var k = layers.Linear(contextStates, prefix + ".to_k");
            var v = layers.Linear(contextStates, prefix + ".to_v");
            return layers.Linear(layers.ScaledDotProductAttention(q, k, v, heads, dimHead), prefix + ".to_out.0");
        }

        /// <summary>
        /// diffusers' <c>FeedForward</c> with GEGLU: proj to twice the width, value · gelu(gate), net.2. The projection's
        /// two halves are stored as two weights, so no Split copies the wide product.
        /// </summary>
        private string FeedForward(string x, string prefix)
        {
            var proj = prefix + ".net.0.proj";
            var inner = layers.Tensor(proj + ".weight").Size(0) / 2;
            string Half(string name, long start)
            {
                var w = layers.Weight(proj + ".weight", $".{name}.T", t => t.Narrow(0, start, inner).T().Contiguous());
                var b = layers.Weight(proj + ".bias", $".{name}", t => t.Narrow(0, start, inner).Contiguous());
                return layers.Add(graph.Op("MatMul", [x, w]), b);
            }
            return layers.Linear(layers.Mul(Half("value", 0), layers.Gelu(Half("gate", inner))), prefix + ".net.2");
        }

        /// <summary>The config's <c>act_fn</c>, as diffusers' <c>get_activation</c>.</summary>
        private string Act(string x) => config.ActFn switch
        {
            "silu" or "swish" => layers.Silu(x),
            "gelu" => layers.Gelu(x),
            "relu" => graph.Op("Relu", [x]),
            "mish" => layers.Mul(x, graph.Op("Tanh", [graph.Op("Softplus", [x])])), // opset 18 has Mish; 17 does not
            var other => throw new NotSupportedException($"act_fn '{other}' has no ONNX form here"),
        };
    }
}
