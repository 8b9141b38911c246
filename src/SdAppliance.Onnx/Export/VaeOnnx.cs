using Onnx;
using SdAppliance.Models.Vae;
using SdAppliance.Onnx.Graphs;
using DataType = Onnx.TensorProto.Types.DataType;

namespace SdAppliance.Onnx.Export;

/// <summary>
/// The VAE's two halves as ONNX graphs, built as <see cref="AutoencoderKL"/>'s <c>Encoder</c>/<c>Decoder</c> compute,
/// with the interfaces of optimum's and diffusers' exports:
/// <list type="bullet">
/// <item><c>vae_decoder</c>: <c>latent_sample</c> [batch_size, latent, h, w], already divided by the scaling factor →
/// post_quant_conv → decoder → <c>sample</c> [batch_size, 3, 8h, 8w] (both layouts).</item>
/// <item><c>vae_encoder</c>: <c>sample</c> [batch_size, 3, H, W] in [−1, 1] → encoder → quant_conv. optimum:
/// <c>latent_parameters</c> [batch_size, 2·latent, H/8, W/8], the posterior's mean then log-variance (its runtime builds
/// the DiagonalGaussianDistribution). diffusers: <c>latent_sample</c>, one draw of the posterior inside the graph, as its
/// converter's <c>vae.encode(x).latent_dist.sample()</c> traces: mean + exp(clamp(logvar, −30, 20) / 2) · ε, not
/// multiplied by the scaling factor (its img2img pipeline does that). ε comes from a <c>RandomNormalLike</c> node with no
/// seed: the runtime draws it anew on every run, so it follows no generation seed.</item>
/// </list>
/// Float inputs and outputs have the graph's float type (fp16 exports take and give fp16, as optimum's and diffusers'
/// fp16 exports do). GroupNorm is <see cref="Layers.GroupNorm"/>'s InstanceNormalization form.
/// </summary>
public static class VaeOnnx
{
    // diffusers builds every VAE norm with eps 1e-6 (resnets, mid-block attention, conv_norm_out).
    private const double Eps = 1e-6;

    public static ModelProto BuildEncoder(AutoencoderKL vae, OnnxExportOptions options)
    {
        ArgumentNullException.ThrowIfNull(vae);
        ArgumentNullException.ThrowIfNull(options);
        var c = vae.Config;
        using var weights = vae.StateDict();
        var (graph, layers) = Start("vae_encoder", weights, options);
        var factor = c.DownscaleFactor;
        var sample = graph.Input("sample", graph.FloatType, "batch_size", c.InChannels, "sample_height", "sample_width");

        var net = new Net(layers, c.NormNumGroups, c.ActFn);
        var h = layers.Conv2d(sample, "encoder.conv_in", padding: 1);
        for (var i = 0; i < c.BlockOutChannels.Count; i++)
        {
            for (var j = 0; j < c.LayersPerBlock; j++) h = net.Resnet(h, $"encoder.down_blocks.{i}.resnets.{j}");
            if (i != c.BlockOutChannels.Count - 1) h = net.Downsample(h, $"encoder.down_blocks.{i}.downsamplers.0");
        }
        h = net.MidBlock(h, "encoder.mid_block", c.MidBlockAddAttention);
        h = net.Act(layers.GroupNorm(h, "encoder.conv_norm_out", c.NormNumGroups, Eps));
        h = layers.Conv2d(h, "encoder.conv_out", padding: 1);
        if (layers.Has("quant_conv.weight")) h = layers.Conv2d(h, "quant_conv");

        Dim batch = "batch_size", height = $"sample_height / {factor}", width = $"sample_width / {factor}";
        if (options.Layout == OnnxLayout.Optimum)
        {
            graph.Output("latent_parameters", h, graph.FloatType, batch, 2 * c.LatentChannels, height, width);
        }
        else
        {
            var latent = c.LatentChannels;
            var mean = graph.Op("Slice", [h, graph.Int64s(0), graph.Int64s(latent), graph.Int64s(1)]);
            var logvar = graph.Op("Slice", [h, graph.Int64s(latent), graph.Int64s(2 * latent), graph.Int64s(1)]);
            logvar = graph.Op("Clip", [logvar, graph.Scalar(-30), graph.Scalar(20)]);
            var std = graph.Op("Exp", [layers.Mul(logvar, graph.Scalar(0.5))]);
            // Drawn in float32 (every runtime's random kernels have it; ORT's CPU ones have no fp16), then cast to the graph's type.
            var noise = layers.CastToCompute(graph.Op("RandomNormalLike", [mean], ("dtype", (long)DataType.Float), ("mean", 0.0), ("scale", 1.0)), DataType.Float);
            graph.Output("latent_sample", layers.Add(mean, layers.Mul(std, noise)), graph.FloatType, batch, latent, height, width);
        }
        return graph.ToModel(opset: options.Opset);
    }

    public static ModelProto BuildDecoder(AutoencoderKL vae, OnnxExportOptions options)
    {
        ArgumentNullException.ThrowIfNull(vae);
        ArgumentNullException.ThrowIfNull(options);
        var c = vae.Config;
        using var weights = vae.StateDict();
        var (graph, layers) = Start("vae_decoder", weights, options);
        var factor = c.DownscaleFactor;
        var latentSample = graph.Input("latent_sample", graph.FloatType, "batch_size", c.LatentChannels, "latent_height", "latent_width");

        var net = new Net(layers, c.NormNumGroups, c.ActFn);
        var h = layers.Has("post_quant_conv.weight") ? layers.Conv2d(latentSample, "post_quant_conv") : latentSample;
        h = layers.Conv2d(h, "decoder.conv_in", padding: 1);
        h = net.MidBlock(h, "decoder.mid_block", c.MidBlockAddAttention);
        for (var i = 0; i < c.BlockOutChannels.Count; i++)
        {
            for (var j = 0; j < c.LayersPerBlock + 1; j++) h = net.Resnet(h, $"decoder.up_blocks.{i}.resnets.{j}");
            if (i != c.BlockOutChannels.Count - 1) h = net.Upsample(h, $"decoder.up_blocks.{i}.upsamplers.0");
        }
        h = net.Act(layers.GroupNorm(h, "decoder.conv_norm_out", c.NormNumGroups, Eps));
        h = layers.Conv2d(h, "decoder.conv_out", padding: 1);

        graph.Output("sample", h, graph.FloatType, "batch_size", c.OutChannels, $"latent_height * {factor}", $"latent_width * {factor}");
        return graph.ToModel(opset: options.Opset);
    }

    private static (OnnxGraph Graph, Layers Layers) Start(string name, IReadOnlyDictionary<string, SdAppliance.Torch.Tensor> weights, OnnxExportOptions options)
    {
        var graph = new OnnxGraph(name, options.Precision == OnnxPrecision.Float16 ? DataType.Float16 : DataType.Float);
        return (graph, new Layers(graph, weights, options.Attention));
    }

    /// <summary>The VAE's blocks (diffusers' ResnetBlock2D without time embedding, UNetMidBlock2D, Up/Downsample2D).</summary>
    private sealed class Net(Layers layers, int groups, string actFn)
    {
        private readonly OnnxGraph graph = layers.Graph;

        /// <summary>diffusers' <c>get_activation</c>.</summary>
        public string Act(string x) => actFn switch
        {
            "silu" or "swish" => layers.Silu(x),
            "gelu" => layers.Gelu(x),
            "relu" => graph.Op("Relu", [x]),
            // mish(x) = x · tanh(softplus(x))
            "mish" => layers.Mul(x, graph.Op("Tanh", [graph.Op("Softplus", [x])])),
            _ => throw new NotSupportedException($"unknown activation function '{actFn}' (silu, swish, mish, gelu, relu)"),
        };

        /// <summary><c>ResnetBlock2D</c> as the VAE has it: no time embedding, output_scale_factor 1, dropout 0.</summary>
        public string Resnet(string x, string prefix)
        {
            var h = layers.Conv2d(Act(layers.GroupNorm(x, prefix + ".norm1", groups, Eps)), prefix + ".conv1", padding: 1);
            h = layers.Conv2d(Act(layers.GroupNorm(h, prefix + ".norm2", groups, Eps)), prefix + ".conv2", padding: 1);
            var shortcut = layers.Has(prefix + ".conv_shortcut.weight") ? layers.Conv2d(x, prefix + ".conv_shortcut") : x;
            return layers.Add(shortcut, h);
        }

        /// <summary><c>UNetMidBlock2D</c> with one layer: resnets.0, attentions.0 (when the config adds it), resnets.1.</summary>
        public string MidBlock(string x, string prefix, bool addAttention)
        {
            x = Resnet(x, prefix + ".resnets.0");
            if (addAttention) x = Attention(x, prefix + ".attentions.0");
            return Resnet(x, prefix + ".resnets.1");
        }

        /// <summary>
        /// The mid block's <c>Attention</c>: group_norm over the image, one head as wide as the channels (the VAE's
        /// attention_head_dim is the channel count) over the H·W tokens, to_out.0, then the input added back.
        /// </summary>
        public string Attention(string x, string prefix)
        {
            var channels = layers.Tensor(prefix + ".to_q.weight").Size(0);
            var h = layers.GroupNorm(x, prefix + ".group_norm", groups, Eps);
            var tokens = layers.Transpose(layers.Reshape(h, 0, channels, -1), 0, 2, 1);
            var q = layers.Linear(tokens, prefix + ".to_q");
            var k = layers.Linear(tokens, prefix + ".to_k");
            var v = layers.Linear(tokens, prefix + ".to_v");
            h = layers.Linear(layers.ScaledDotProductAttention(q, k, v, heads: 1, dimHead: channels), prefix + ".to_out.0");
            h = graph.Op("Reshape", [layers.Transpose(h, 0, 2, 1), graph.Op("Shape", [x])]);
            return layers.Add(h, x);
        }

        /// <summary>
        /// <c>Downsample2D</c> with padding 0, as the VAE's: pad one row at the bottom and one column at the right (the
        /// original LDM code's asymmetric (0, 1, 0, 1)), then the stride-2 3×3 conv.
        /// </summary>
        public string Downsample(string x, string prefix)
        {
            var padded = graph.Op("Pad", [x, graph.Int64s(0, 0, 0, 0, 0, 0, 1, 1)], ("mode", "constant"));
            return layers.Conv2d(padded, prefix + ".conv", stride: 2);
        }

        /// <summary>
        /// <c>Upsample2D</c>: nearest 2× then the 3×3 conv. PyTorch's "nearest" reads source pixel floor(dst / 2), which is
        /// Resize's asymmetric coordinates with floor rounding; the output size is given as sizes (int64), so the graph
        /// needs no float32 scales in an fp16 export.
        /// </summary>
        public string Upsample(string x, string prefix)
        {
            var sizes = graph.Op("Mul", [graph.Op("Shape", [x]), graph.Int64s(1, 1, 2, 2)]);
            var up = graph.Op("Resize", [x, "", "", sizes],
                ("mode", "nearest"), ("coordinate_transformation_mode", "asymmetric"), ("nearest_mode", "floor"));
            return layers.Conv2d(up, prefix + ".conv", padding: 1);
        }
    }
}
