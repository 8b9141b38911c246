using Onnx;
using SdAppliance.Onnx.Graphs;
using SdAppliance.Torch;
using DataType = Onnx.TensorProto.Types.DataType;

namespace SdAppliance.Onnx.Tests;

/// <summary>How a toy export spells its graphs: each ONNX Stable Diffusion app's conventions, one option each.</summary>
public sealed record ToyLayout
{
    /// <summary>optimum: int64 ids, a rank-0 timestep, the VAE encoder's mean and log-variance.</summary>
    public static ToyLayout Optimum { get; } = new();

    /// <summary>diffusers' script: int32 ids, a float timestep [batch], the VAE encoder sampling in the graph.</summary>
    public static ToyLayout Diffusers { get; } = new() { Ids = DataType.Int32, TimestepRank = 1, TimestepBatch = true, TimestepType = DataType.Float, EncoderOutput = "latent_sample" };

    /// <summary>OnnxStack/Olive: int32 ids, timestep [1], fp32 inputs and outputs around an fp16 graph.</summary>
    public static ToyLayout OnnxStack { get; } = new() { Ids = DataType.Int32, TimestepRank = 1, TimestepType = DataType.Float, RoundThroughHalf = true };

    public DataType Ids { get; init; } = DataType.Int64;

    /// <summary>An LCM's UNet: a <c>timestep_cond</c> input [batch, this] (the guidance embedding), whose mean the toy adds.</summary>
    public int? TimeCondProjDim { get; init; }
    public int TimestepRank { get; init; }

    /// <summary>A timestep of shape [batch] (symbolic) rather than [1].</summary>
    public bool TimestepBatch { get; init; }

    public DataType TimestepType { get; init; } = DataType.Int64;

    /// <summary>float16 inputs and outputs (an fp16 export as diffusers' script writes it).</summary>
    public bool HalfIo { get; init; }

    /// <summary>fp32 at the boundary, float16 inside (values rounded to fp16 on the way out).</summary>
    public bool RoundThroughHalf { get; init; }

    /// <summary><c>latent_parameters</c>, <c>latent_sample</c>, or null for no vae_encoder at all.</summary>
    public string? EncoderOutput { get; init; } = "latent_parameters";

    public bool HiddenStates { get; init; } = true;

    /// <summary>The text encoder takes one sequence at a time (a static batch of 1).</summary>
    public bool TextBatchOfOne { get; init; }

    public bool Sdxl { get; init; }

    public string SampleName { get; init; } = "sample";
    public int Opset { get; init; } = OnnxGraph.DefaultOpset;

    /// <summary>Write a config.json beside each graph, as optimum does.</summary>
    public bool Configs { get; init; } = true;
}

/// <summary>
/// A hand-built export whose networks are simple arithmetic a test can predict, in the folder layout of ONNX SD apps
/// (the tiny fixture's tokenizer and scheduler). Text encoder: <c>hidden_states.k = ids · w_k</c> (k = 0..3, w_k a fixed
/// vector), <c>last_hidden_state = LayerNorm(hidden_states.3)</c> with the initializers
/// <c>text_model.final_layer_norm.{weight,bias}</c>, pooled = the first row. UNet: <c>0.5 · sample + 0.001 · t +
/// mean(encoder_hidden_states)</c> per item (SDXL adds the means of text_embeds and 0.001 · time_ids, an LCM the mean of timestep_cond). VAE decoder: the
/// first three latent channels upscaled 8× (nearest); encoder: 8×8 means of the image's channels (and the first again) as
/// the mean, log-variance −2.
/// </summary>
public static class ToyOnnxExport
{
    public const int Layers = 3;
    public const int Width = 8;
    public const int PooledWidth = 8;
    public static readonly string Fixtures = Path.Combine(AppContext.BaseDirectory, "Fixtures");

    public static float[] LayerWeight(int k) => [.. Enumerable.Range(0, Width).Select(j => (k + 1) * 1e-4f * (j + 1))];

    public static readonly float[] NormWeight = [.. Enumerable.Range(0, Width).Select(j => 1 + 0.1f * j)];
    public static readonly float[] NormBias = [.. Enumerable.Range(0, Width).Select(j => 0.01f * j)];

    public static string Write(string folder, ToyLayout layout)
    {
        Directory.CreateDirectory(folder);
        var tiny = TinySd;
        CopyFolder(Path.Combine(tiny, "tokenizer"), Path.Combine(folder, "tokenizer"));
        CopyFolder(Path.Combine(tiny, "scheduler"), Path.Combine(folder, "scheduler"));
        File.WriteAllText(Path.Combine(folder, "model_index.json"), layout.Sdxl
            ? """{"_class_name": "ORTStableDiffusionXLPipeline"}"""
            : """{"_class_name": "ORTStableDiffusionPipeline", "text_encoder": ["transformers", "CLIPTextModel"]}""");
        Save(TextEncoder(layout, pooledName: "pooler_output"), folder, "text_encoder", layout);
        if (layout.Sdxl)
        {
            CopyFolder(Path.Combine(tiny, "tokenizer"), Path.Combine(folder, "tokenizer_2"));
            Save(TextEncoder(layout, pooledName: "text_embeds"), folder, "text_encoder_2", layout);
        }
        Save(Unet(layout), folder, "unet", layout);
        Save(VaeDecoder(layout), folder, "vae_decoder", layout);
        if (layout.EncoderOutput is { } output) Save(VaeEncoder(layout, output), folder, "vae_encoder", layout);
        if (layout.Configs)
        {
            File.WriteAllText(Path.Combine(folder, "text_encoder", "config.json"),
                $$"""{"hidden_act": "quick_gelu", "hidden_size": {{Width}}, "num_hidden_layers": {{Layers}}, "num_attention_heads": 1, "intermediate_size": 16, "vocab_size": 914, "bos_token_id": 912, "eos_token_id": 913, "pad_token_id": 913, "projection_dim": {{Width}}}""");
            var vae = """{"block_out_channels": [8, 8, 8, 8], "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"], "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"], "latent_channels": 4, "norm_num_groups": 4, "scaling_factor": 0.5, "sample_size": 64}""";
            File.WriteAllText(Path.Combine(folder, "vae_decoder", "config.json"), vae);
        }
        return folder;
    }

    public static string TinySd => Path.Combine(Fixtures, "tiny-sd");

    private static void Save(ModelProto model, string folder, string component, ToyLayout layout)
    {
        OnnxFile.Save(model, Path.Combine(folder, component, "model.onnx"));
    }

    private static ModelProto ToModel(OnnxGraph g, ToyLayout layout) => g.ToModel(opset: layout.Opset);

    private static string ToFloat(OnnxGraph g, string x) => g.Op("Cast", [x], ("to", (long)DataType.Float));

    private static string Out(OnnxGraph g, string x, ToyLayout layout)
    {
        if (layout.RoundThroughHalf) x = ToFloat(g, g.Op("Cast", [x], ("to", (long)DataType.Float16)));
        return layout.HalfIo ? g.Op("Cast", [x], ("to", (long)DataType.Float16)) : x;
    }

    private static DataType Io(ToyLayout layout) => layout.HalfIo ? DataType.Float16 : DataType.Float;

    public static ModelProto TextEncoder(ToyLayout layout, string pooledName)
    {
        var g = new OnnxGraph("text_encoder");
        Dim batch = layout.TextBatchOfOne ? 1 : "batch";
        var ids = g.Input("input_ids", layout.Ids, batch, "sequence");
        var x = g.Op("Unsqueeze", [ToFloat(g, ids), g.Int64s(-1)]);
        var hidden = new List<string>();
        for (var k = 0; k <= Layers; k++)
        {
            using var w = torch.Tensor(LayerWeight(k), Width);
            hidden.Add(g.Op("Mul", [x, g.Initializer($"w{k}", w)]));
        }
        using var nw = torch.Tensor(NormWeight, Width);
        using var nb = torch.Tensor(NormBias, Width);
        var last = g.Op("LayerNormalization", [hidden[^1], g.Initializer("text_model.final_layer_norm.weight", nw), g.Initializer("text_model.final_layer_norm.bias", nb)],
            ("axis", -1L), ("epsilon", 1e-5f));
        g.Output("last_hidden_state", Out(g, last, layout), Io(layout), batch, "sequence", Width);
        var pooled = g.Op("Gather", [last, g.Int64s([], [0])], ("axis", 1L));
        if (pooledName == "text_embeds") pooled = g.Op("Mul", [pooled, g.Scalar(2)]);
        g.Output(pooledName, Out(g, pooled, layout), Io(layout), batch, PooledWidth);
        if (layout.HiddenStates)
            for (var k = 0; k <= Layers; k++)
                g.Output($"hidden_states.{k}", Out(g, hidden[k], layout), Io(layout), batch, "sequence", Width);
        return ToModel(g, layout);
    }

    public static ModelProto Unet(ToyLayout layout)
    {
        var g = new OnnxGraph("unet");
        var io = Io(layout);
        var sample = ToFloat(g, g.Input(layout.SampleName, io, "batch", 4, "height", "width"));
        Dim[] timestepShape = layout.TimestepRank == 0 ? [] : [layout.TimestepBatch ? "batch" : 1];
        var t = g.Op("Reshape", [ToFloat(g, g.Input("timestep", layout.TimestepType, timestepShape)), g.Int64s(-1, 1, 1, 1)]);
        var ehs = ToFloat(g, g.Input("encoder_hidden_states", io, "batch", "sequence", layout.Sdxl ? 2 * Width : Width));
        var mean = g.Op("Reshape", [g.Op("ReduceMean", [ehs], ("axes", new long[] { 1, 2 }), ("keepdims", 1L)), g.Int64s(-1, 1, 1, 1)]);
        var y = g.Op("Add", [g.Op("Add", [g.Op("Mul", [sample, g.Scalar(0.5)]), g.Op("Mul", [t, g.Scalar(0.001)])]), mean]);
        if (layout.Sdxl)
        {
            var embeds = ToFloat(g, g.Input("text_embeds", io, "batch", PooledWidth));
            var timeIds = ToFloat(g, g.Input("time_ids", io, "batch", 6));
            y = g.Op("Add", [y, g.Op("Reshape", [g.Op("ReduceMean", [embeds], ("axes", new long[] { 1 }), ("keepdims", 1L)), g.Int64s(-1, 1, 1, 1)])]);
            var ids = g.Op("Mul", [g.Op("ReduceMean", [timeIds], ("axes", new long[] { 1 }), ("keepdims", 1L)), g.Scalar(0.001)]);
            y = g.Op("Add", [y, g.Op("Reshape", [ids, g.Int64s(-1, 1, 1, 1)])]);
        }
        if (layout.TimeCondProjDim is { } condDim)
        {
            var cond = ToFloat(g, g.Input("timestep_cond", io, "batch", condDim));
            y = g.Op("Add", [y, g.Op("Reshape", [g.Op("ReduceMean", [cond], ("axes", new long[] { 1 }), ("keepdims", 1L)), g.Int64s(-1, 1, 1, 1)])]);
        }
        g.Output("out_sample", Out(g, y, layout), io, "batch", 4, "height", "width");
        return ToModel(g, layout);
    }

    public static ModelProto VaeDecoder(ToyLayout layout)
    {
        var g = new OnnxGraph("vae_decoder");
        var z = ToFloat(g, g.Input("latent_sample", Io(layout), "batch", 4, "height", "width"));
        var rgb = g.Op("Slice", [z, g.Int64s(0), g.Int64s(3), g.Int64s(1)]);
        using var scales = torch.Tensor(new float[] { 1, 1, 8, 8 }, 4);
        var up = g.Op("Resize", [rgb, "", g.Initializer("scales", scales)], ("mode", "nearest"),
            ("coordinate_transformation_mode", "asymmetric"), ("nearest_mode", "floor"));
        g.Output("sample", Out(g, up, layout), Io(layout), "batch", 3, "image_height", "image_width");
        return ToModel(g, layout);
    }

    public static ModelProto VaeEncoder(ToyLayout layout, string output)
    {
        var g = new OnnxGraph("vae_encoder");
        var x = ToFloat(g, g.Input("sample", Io(layout), "batch", 3, "height", "width"));
        var pooled = g.Op("AveragePool", [x], ("kernel_shape", new long[] { 8, 8 }), ("strides", new long[] { 8, 8 }));
        var mean = g.Op("Concat", [pooled, g.Op("Slice", [pooled, g.Int64s(0), g.Int64s(1), g.Int64s(1)])], ("axis", 1L));
        if (output == "latent_parameters")
        {
            var logvar = g.Op("Add", [g.Op("Mul", [mean, g.Scalar(0)]), g.Scalar(-2)]);
            g.Output(output, Out(g, g.Op("Concat", [mean, logvar], ("axis", 1L)), layout), Io(layout), "batch", 8, "latent_height", "latent_width");
        }
        else
        {
            g.Output(output, Out(g, mean, layout), Io(layout), "batch", 4, "latent_height", "latent_width");
        }
        return ToModel(g, layout);
    }

    private static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var file in Directory.EnumerateFiles(from)) File.Copy(file, Path.Combine(to, Path.GetFileName(file)), overwrite: true);
    }
}
