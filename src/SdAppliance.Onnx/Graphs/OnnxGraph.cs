using Google.Protobuf;
using Onnx;
using SdAppliance.Torch;
using DataType = Onnx.TensorProto.Types.DataType;

namespace SdAppliance.Onnx.Graphs;

/// <summary>One dimension of a graph input or output: a fixed size, or a named symbolic one (<c>batch</c>, <c>height</c>).</summary>
public readonly record struct Dim(long? Value, string? Param)
{
    public static implicit operator Dim(long value) => new(value, null);
    public static implicit operator Dim(string param) => new(null, param);
}

/// <summary>
/// Builds one ONNX graph node by node, the way our modules compute: each call adds a node and
/// returns the name of its output, so a builder reads like the module's <c>Forward</c>. Weights
/// become initializers under their state-dict names (converted to <see cref="FloatType"/>); every
/// value gets a unique name. <see cref="ToModel"/> wraps the graph in a model with the opset imports.
/// </summary>
public sealed class OnnxGraph
{
    /// <summary>The default opset: 17 has LayerNormalization, and the ONNX checker of Debian 12 (onnx 1.12) knows it.</summary>
    public const int DefaultOpset = 17;

    /// <summary>The domain of ONNX Runtime's contrib operators (MultiHeadAttention, ...).</summary>
    public const string MicrosoftDomain = "com.microsoft";

    private readonly GraphProto graph;
    private readonly HashSet<string> names = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> counters = new(StringComparer.Ordinal);
    private readonly HashSet<string> domains = new(StringComparer.Ordinal);

    public OnnxGraph(string name, DataType floatType = DataType.Float)
    {
        if (floatType is not (DataType.Float or DataType.Float16))
            throw new ArgumentException($"graphs compute in float32 or float16, not {floatType}", nameof(floatType));
        graph = new GraphProto { Name = name };
        FloatType = floatType;
    }

    /// <summary>The type the graph computes in: weights are stored in it and float inputs are cast to it.</summary>
    public DataType FloatType { get; }

    public GraphProto Graph => graph;

    /// <summary>Declares a graph input; returns its name.</summary>
    public string Input(string name, DataType type, params Dim[] shape)
    {
        Claim(name);
        graph.Input.Add(ValueInfo(name, type, shape));
        return name;
    }

    /// <summary>Declares <paramref name="value"/> as the graph output <paramref name="name"/> (through an Identity when the names differ).</summary>
    public void Output(string name, string value, DataType type, params Dim[] shape)
    {
        if (value != name)
        {
            Claim(name);
            graph.Node.Add(NewNode("Identity", [value], [name], Unique("Identity")));
        }
        graph.Output.Add(ValueInfo(name, type, shape));
    }

    /// <summary>A weight as an initializer named <paramref name="name"/>; float tensors are stored in <see cref="FloatType"/>.</summary>
    public string Initializer(string name, Tensor tensor)
    {
        Claim(name);
        graph.Initializer.Add(ToTensorProto(name, tensor, FloatType));
        return name;
    }

    /// <summary>A constant stored in <paramref name="type"/> whatever <see cref="FloatType"/> is (float32 values an fp16 graph must keep exact).</summary>
    public string Initializer(string name, Tensor tensor, DataType type)
    {
        Claim(name);
        graph.Initializer.Add(ToTensorProto(name, tensor, type));
        return name;
    }

    /// <summary>An int64 constant (shapes, axes, indices).</summary>
    public string Int64s(params long[] values) => Int64s([values.Length], values);

    /// <summary>An int64 constant of a given shape (an empty shape is a scalar).</summary>
    public string Int64s(long[] shape, long[] values)
    {
        var name = Unique("const_i64");
        Claim(name);
        var proto = new TensorProto { Name = name, DataType = (int)DataType.Int64 };
        proto.Dims.AddRange(shape);
        proto.Int64Data.AddRange(values);
        graph.Initializer.Add(proto);
        return name;
    }

    /// <summary>A float scalar constant in <see cref="FloatType"/> (or the type given).</summary>
    public string Scalar(double value, DataType? type = null)
    {
        var name = Unique("const_f");
        Claim(name);
        using var t = torch.Scalar(value, DType.Float32);
        graph.Initializer.Add(ToTensorProto(name, t, type ?? FloatType));
        return name;
    }

    /// <summary>Adds a node with one output; returns the output's name.</summary>
    public string Op(string opType, string[] inputs, params (string Name, object Value)[] attributes) =>
        Op(opType, inputs, 1, "", attributes)[0];

    /// <summary>Adds a node of <paramref name="domain"/> ("" is ONNX's own) with <paramref name="outputs"/> outputs; returns their names.</summary>
    public string[] Op(string opType, string[] inputs, int outputs, string domain, params (string Name, object Value)[] attributes)
    {
        var nodeName = Unique(opType);
        var outputNames = Enumerable.Range(0, outputs).Select(i => outputs == 1 ? nodeName + "_out" : $"{nodeName}_out{i}").ToArray();
        foreach (var o in outputNames) Claim(o);
        var node = NewNode(opType, inputs, outputNames, nodeName);
        node.Domain = domain;
        if (domain.Length > 0) domains.Add(domain);
        foreach (var (name, value) in attributes) node.Attribute.Add(Attribute(name, value));
        graph.Node.Add(node);
        return outputNames;
    }

    /// <summary>The graph as a model: IR version 8 (what opset 17 pairs with), the opset imports of every domain used.</summary>
    public ModelProto ToModel(string producerVersion = "", int opset = DefaultOpset)
    {
        var model = new ModelProto { IrVersion = 8, ProducerName = "sdappliance", ProducerVersion = producerVersion, Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });
        foreach (var d in domains.Order(StringComparer.Ordinal)) model.OpsetImport.Add(new OperatorSetIdProto { Domain = d, Version = 1 });
        return model;
    }

    /// <summary>A fresh value name built from <paramref name="stem"/>.</summary>
    public string Unique(string stem)
    {
        var n = counters.TryGetValue(stem, out var c) ? c + 1 : 0;
        counters[stem] = n;
        var name = n == 0 ? stem : $"{stem}_{n}";
        while (names.Contains(name)) name = $"{stem}_{++n}";
        counters[stem] = n;
        return name;
    }

    private void Claim(string name)
    {
        if (!names.Add(name)) throw new InvalidOperationException($"the graph already has a value named '{name}'");
    }

    private static NodeProto NewNode(string opType, string[] inputs, string[] outputs, string name)
    {
        var node = new NodeProto { OpType = opType, Name = name };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        return node;
    }

    private static ValueInfoProto ValueInfo(string name, DataType type, Dim[] shape)
    {
        var tensorShape = new TensorShapeProto();
        foreach (var d in shape)
            tensorShape.Dim.Add(d.Value is { } v ? new TensorShapeProto.Types.Dimension { DimValue = v } : new TensorShapeProto.Types.Dimension { DimParam = d.Param });
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = tensorShape } },
        };
    }

    private static AttributeProto Attribute(string name, object value) => value switch
    {
        long i => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = i },
        int i => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = i },
        float f => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = f },
        double f => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = (float)f },
        string s => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(s) },
        long[] ints => WithInts(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints }, ints),
        int[] ints => WithInts(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints }, [.. ints.Select(i => (long)i)]),
        float[] floats => WithFloats(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Floats }, floats),
        _ => throw new ArgumentException($"attribute '{name}': {value.GetType().Name} values are not supported"),
    };

    private static AttributeProto WithInts(AttributeProto a, long[] values)
    {
        a.Ints.AddRange(values);
        return a;
    }

    private static AttributeProto WithFloats(AttributeProto a, float[] values)
    {
        a.Floats.AddRange(values);
        return a;
    }

    /// <summary>A tensor as a TensorProto with raw little-endian data; floating tensors are converted to <paramref name="floatType"/>.</summary>
    public static TensorProto ToTensorProto(string name, Tensor tensor, DataType floatType)
    {
        using var scope = torch.NewDisposeScope();
        var (dtype, type) = tensor.DType switch
        {
            DType.Float32 or DType.Float16 or DType.BFloat16 or DType.Float64 => floatType == DataType.Float16 ? (DType.Float16, DataType.Float16) : (DType.Float32, DataType.Float),
            DType.Int64 => (DType.Int64, DataType.Int64),
            DType.Int32 => (DType.Int32, DataType.Int32),
            DType.Bool => (DType.Bool, DataType.Bool),
            DType.UInt8 => (DType.UInt8, DataType.Uint8),
            var other => throw new NotSupportedException($"'{name}': {other} tensors have no ONNX initializer type here"),
        };
        var cpu = tensor.Detach().To(Device.Cpu).To(dtype).Contiguous();
        var proto = new TensorProto { Name = name, DataType = (int)type, RawData = ByteString.CopyFrom(cpu.ToBytes()) };
        proto.Dims.AddRange(cpu.Shape);
        return proto;
    }
}
