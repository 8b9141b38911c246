using System.Text.RegularExpressions;
using Onnx;
using SdAppliance.Formats;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Onnx.Graphs;
using SdAppliance.Torch;

namespace SdAppliance.Onnx.Runtime;

/// <summary>
/// An exported CLIP text encoder: <c>input_ids</c> (int32 or int64, as the graph says) to <c>last_hidden_state</c>, the
/// pooled output (<c>pooler_output</c>, or <c>text_embeds</c> with SDXL's projection) and, where the exporter kept them,
/// every layer's <c>hidden_states.N</c> (N = 0 is the embeddings, as Hugging Face's <c>output_hidden_states</c>).
/// </summary>
internal sealed partial class OnnxTextEncoder : IDisposable
{
    private readonly OnnxSession session;
    private readonly double layerNormEps;
    private (Tensor Weight, Tensor Bias)? finalLayerNorm;

    public OnnxTextEncoder(OnnxSession session, ClipTextConfig? config)
    {
        this.session = session;
        session.RequireInput("input_ids", "the token ids");
        IdsDType = session.InputDType("input_ids");
        if (IdsDType is not (DType.Int32 or DType.Int64))
            throw new UserInputException(session.Path, $"its input_ids are {IdsDType}, not int32 or int64 token ids", "export the model again (convert it to ONNX)");
        FixedBatch = session.FixedDim("input_ids", 0);
        LastHiddenState = session.RequireOutput("the text conditioning", "last_hidden_state");
        Pooled = new[] { "text_embeds", "pooler_output" }.FirstOrDefault(session.HasOutput);
        HiddenStates = [.. session.Outputs.Keys.Select(n => (Name: n, Match: HiddenStateName().Match(n))).Where(x => x.Match.Success)
            .OrderBy(x => int.Parse(x.Match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)).Select(x => x.Name)];
        layerNormEps = config?.LayerNormEps ?? 1e-5;
    }

    [GeneratedRegex(@"^hidden_states\.(\d+)$")]
    private static partial Regex HiddenStateName();

    public string Path => session.Path;
    public DType IdsDType { get; }

    /// <summary>The batch the graph fixes (some exports take one sequence at a time); null when any batch runs.</summary>
    public long? FixedBatch { get; }

    public string LastHiddenState { get; }

    /// <summary><c>text_embeds</c> (projected) or <c>pooler_output</c>; null when the graph has neither.</summary>
    public string? Pooled { get; }

    /// <summary>The <c>hidden_states.N</c> outputs in order: the embeddings, then each layer's output (empty when not exported).</summary>
    public IReadOnlyList<string> HiddenStates { get; }

    /// <summary>The layers, where the hidden states tell them; null when the graph gives only its last output.</summary>
    public int? Layers => HiddenStates.Count > 0 ? HiddenStates.Count - 1 : null;

    /// <summary>
    /// Runs the encoder on <paramref name="ids"/> [chunks, L] and returns <paramref name="outputs"/> in order, each
    /// [chunks, ...]: one run for every chunk together, or one per chunk where the graph fixes its batch at 1.
    /// </summary>
    public Tensor[] Run(Tensor ids, IReadOnlyList<string> outputs)
    {
        if (FixedBatch is not { } fixedBatch || fixedBatch == ids.Size(0)) return session.Run([("input_ids", ids)], outputs);
        if (fixedBatch != 1)
            throw new UserInputException(Path, $"takes exactly {fixedBatch} sequences at a time", "export the model again with a dynamic batch (convert it to ONNX)");
        var perChunk = new List<Tensor[]>();
        try
        {
            for (var c = 0; c < ids.Size(0); c++)
            {
                using var chunk = ids.Narrow(0, c, 1);
                perChunk.Add(session.Run([("input_ids", chunk)], outputs));
            }
            return [.. Enumerable.Range(0, outputs.Count).Select(o => torch.Cat([.. perChunk.Select(p => p[o])]))];
        }
        finally
        {
            foreach (var p in perChunk) foreach (var t in p) t.Dispose();
        }
    }

    /// <summary>
    /// <c>hidden_states[-n]</c> for n ≥ 1 (A1111's clip skip n counts from the last layer). A graph without hidden-state
    /// outputs gives only its last layer, and skipping layers is refused naming the file.
    /// </summary>
    public string HiddenStateFromEnd(int n)
    {
        if (HiddenStates.Count == 0)
            throw new UserInputException(Path, $"outputs only last_hidden_state, so clip skip {n} cannot be applied (it needs the hidden_states.N outputs)",
                "use clip skip 1, or export the model again with its hidden states (convert it to ONNX)");
        if (n > HiddenStates.Count - 1)
            throw new UserInputException(Path, $"has {HiddenStates.Count - 1} layers: clip skip {n} steps back past the first");
        return HiddenStates[^n];
    }

    /// <summary>
    /// The encoder's <c>final_layer_norm</c> applied to <paramref name="hidden"/>, with the weights read from the graph's
    /// initializers <c>text_model.final_layer_norm.weight/bias</c> (once; external data included). An export whose
    /// exporter renamed or folded them is refused naming the file.
    /// </summary>
    public Tensor FinalLayerNorm(Tensor hidden)
    {
        finalLayerNorm ??= ReadFinalLayerNorm();
        var (weight, bias) = finalLayerNorm.Value;
        return Functional.LayerNorm(hidden, [hidden.Size(-1)], weight, bias, layerNormEps);
    }

    private (Tensor, Tensor) ReadFinalLayerNorm()
    {
        const string weightName = "text_model.final_layer_norm.weight", biasName = "text_model.final_layer_norm.bias";
        var model = OnnxFile.ReadStructure(Path);
        var weight = model.Graph.Initializer.FirstOrDefault(t => t.Name == weightName);
        var bias = model.Graph.Initializer.FirstOrDefault(t => t.Name == biasName);
        if (weight is null || bias is null)
            throw new UserInputException(Path, $"has no initializers {weightName} and {biasName}, which clip skip > 1 applies to an earlier layer (SD 1.x does)",
                "use clip skip 1, or export the model with convert to ONNX, which keeps them");
        return (OnnxInitializers.ToTensor(weight, Path).DetachFromDisposeScope(), OnnxInitializers.ToTensor(bias, Path).DetachFromDisposeScope());
    }

    public void Dispose()
    {
        if (finalLayerNorm is var (w, b))
        {
            w.Dispose();
            b.Dispose();
        }
        session.Dispose();
    }
}

/// <summary>Initializers of a graph read back as tensors (raw or typed data, inline or external).</summary>
internal static class OnnxInitializers
{
    public static Tensor ToTensor(TensorProto proto, string modelPath)
    {
        var dtype = (TensorProto.Types.DataType)proto.DataType switch
        {
            TensorProto.Types.DataType.Float => DType.Float32,
            TensorProto.Types.DataType.Float16 => DType.Float16,
            var other => throw new UserInputException(modelPath, $"its initializer {proto.Name} is {other}, not float32 or float16"),
        };
        byte[] bytes;
        if (proto.DataLocation == TensorProto.Types.DataLocation.External)
        {
            var entries = proto.ExternalData.ToDictionary(e => e.Key, e => e.Value);
            var location = System.IO.Path.Combine(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(modelPath))!, entries["location"]);
            if (!File.Exists(location))
                throw new UserInputException(location, $"is missing: {modelPath} keeps {proto.Name} there", "put the external data file back beside the model, or export it again");
            var offset = entries.TryGetValue("offset", out var o) ? long.Parse(o, System.Globalization.CultureInfo.InvariantCulture) : 0;
            using var stream = File.OpenRead(location);
            var length = entries.TryGetValue("length", out var l) ? long.Parse(l, System.Globalization.CultureInfo.InvariantCulture) : stream.Length - offset;
            bytes = new byte[length];
            stream.Position = offset;
            stream.ReadExactly(bytes);
        }
        else if (proto.RawData.Length > 0)
        {
            bytes = proto.RawData.ToByteArray();
        }
        else if (dtype == DType.Float32)
        {
            bytes = new byte[proto.FloatData.Count * 4];
            Buffer.BlockCopy(proto.FloatData.ToArray(), 0, bytes, 0, bytes.Length);
        }
        else
        {
            // ONNX keeps float16 typed data as the bit patterns in int32_data.
            bytes = [.. proto.Int32Data.SelectMany(v => BitConverter.GetBytes((ushort)v))];
        }
        using var tensor = torch.FromBytes(bytes, [.. proto.Dims], dtype);
        return tensor.To(DType.Float32);
    }
}
