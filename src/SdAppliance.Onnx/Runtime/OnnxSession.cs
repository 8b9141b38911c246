using Microsoft.ML.OnnxRuntime;
using TensorElementType = Microsoft.ML.OnnxRuntime.Tensors.TensorElementType;
using SdAppliance.Formats;
using SdAppliance.Torch;

namespace SdAppliance.Onnx.Runtime;

/// <summary>
/// One <c>model.onnx</c> of an exported folder in an ONNX Runtime session, with what its graph says of its inputs and
/// outputs (names, element types, ranks), so that the loader adapts to each exporter's conventions instead of assuming
/// one. Tensors go in and out as libtorch tensors: an input whose dtype matches is bound over the tensor's own memory
/// (no copy), one that does not is cast first (our float32 to an fp16 graph's float16, int64 ids to int32).
/// </summary>
internal sealed class OnnxSession : IDisposable
{
    private readonly InferenceSession session;

    private OnnxSession(string path, InferenceSession session)
    {
        Path = path;
        this.session = session;
        Inputs = session.InputMetadata;
        Outputs = session.OutputMetadata;
    }

    /// <summary>The model file.</summary>
    public string Path { get; }

    public IReadOnlyDictionary<string, NodeMetadata> Inputs { get; }
    public IReadOnlyDictionary<string, NodeMetadata> Outputs { get; }

    /// <summary>
    /// Opens <paramref name="path"/>: a missing file, a file ONNX Runtime cannot read (damaged, not ONNX, missing its
    /// external data) or an opset it does not implement is one <see cref="UserInputException"/> naming the file and the fix.
    /// </summary>
    public static OnnxSession Open(string path, OnnxRuntimeOptions options)
    {
        if (!File.Exists(path))
            throw new UserInputException(path, "is missing from the ONNX export", "export the model again (convert it to ONNX), or give the folder that holds it");
        using var sessionOptions = SessionOptionsFor(options);
        try
        {
            return new OnnxSession(path, new InferenceSession(path, sessionOptions));
        }
        catch (OnnxRuntimeException e)
        {
            throw new UserInputException(path, $"ONNX Runtime cannot load it: {FirstLine(e.Message)}", FixFor(e.Message), e);
        }
    }

    /// <summary>ONNX Runtime's session settings from ours: for every model we open (pipelines and taggers alike).</summary>
    internal static SessionOptions SessionOptionsFor(OnnxRuntimeOptions options)
    {
        var sessionOptions = new SessionOptions
        {
            GraphOptimizationLevel = OptimizationLevel(options.GraphOptimizationLevel),
            IntraOpNumThreads = options.IntraOpThreads,
        };
        // Spinning threads wait for work by burning their core: measured here on a shared CPU, a 20-step demo image took
        // 0.87 s spinning and 0.14 s without (libtorch 0.38 s); the appliance shares its cores with other jobs.
        if (!options.AllowSpinning) sessionOptions.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
        try
        {
            if (options.Provider == OnnxProvider.Cuda)
            {
                RequireProvider("CUDAExecutionProvider", options.Provider);
                sessionOptions.AppendExecutionProvider_CUDA(options.DeviceId);
            }
            return sessionOptions;
        }
        catch (OnnxRuntimeException e)
        {
            sessionOptions.Dispose();
            throw new UserInputException("provider", $"ONNX Runtime cannot use CUDA device {options.DeviceId}: {FirstLine(e.Message)}",
                "check the driver and the device index, or run on cpu", e);
        }
        catch
        {
            sessionOptions.Dispose();
            throw;
        }
    }

    /// <summary>Refuses a provider this ONNX Runtime build does not have, listing those it has.</summary>
    internal static void RequireProvider(string provider, OnnxProvider asked)
    {
        var available = OrtEnv.Instance().GetAvailableProviders();
        if (available.Contains(provider)) return;
        throw new UserInputException("provider", $"{asked.ToString().ToLowerInvariant()} was asked, but this ONNX Runtime has no {provider} (it has {string.Join(", ", available)})",
            "run on cpu, or build the appliance with ONNX Runtime's CUDA build (-p:OnnxRuntimeFlavor=cuda, as the Docker image does) on a machine with an NVIDIA driver");
    }

    internal static GraphOptimizationLevel OptimizationLevel(string level) => level.ToLowerInvariant() switch
    {
        "disabled" or "none" => GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic" => GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended" => GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all" => GraphOptimizationLevel.ORT_ENABLE_ALL,
        _ => throw new UserInputException("graph_optimization_level", $"'{level}' is not one of disabled, basic, extended, all"),
    };

    private static string FirstLine(string message) => message.Split('\n', 2)[0].Trim();

    private static string FixFor(string message)
    {
        if (message.Contains("opset", StringComparison.OrdinalIgnoreCase) || message.Contains("Opset", StringComparison.Ordinal))
            return $"export it again with opset {Graphs.OnnxGraph.DefaultOpset} (what convert to ONNX writes), which this ONNX Runtime implements";
        if (message.Contains("external", StringComparison.OrdinalIgnoreCase) || message.Contains(".onnx_data", StringComparison.Ordinal)
            || message.Contains("weights.pb", StringComparison.Ordinal) || message.Contains(".onnx.data", StringComparison.Ordinal))
            return "put its external data file (model.onnx_data, model.onnx.data or weights.pb) back beside it, or export the model again";
        return "the file is damaged or not an ONNX model: export the model again (convert it to ONNX)";
    }

    // ---- the graph's conventions ----

    public bool HasInput(string name) => Inputs.ContainsKey(name);

    public bool HasOutput(string name) => Outputs.ContainsKey(name);

    /// <summary>The input <paramref name="name"/>: a graph without it is refused, naming what it has.</summary>
    public NodeMetadata RequireInput(string name, string role) =>
        Inputs.TryGetValue(name, out var input) ? input
            : throw new UserInputException(Path, $"has no input '{name}' ({role}); its inputs are {string.Join(", ", Inputs.Keys)}",
                "export the model again with the names ONNX Stable Diffusion apps use (convert it to ONNX)");

    /// <summary>The first of <paramref name="names"/> the graph outputs: a graph with none of them is refused, naming what it has.</summary>
    public string RequireOutput(string role, params string[] names) =>
        names.FirstOrDefault(Outputs.ContainsKey)
            ?? throw new UserInputException(Path, $"has no output {string.Join(" or ", names.Select(n => $"'{n}'"))} ({role}); its outputs are {string.Join(", ", Outputs.Keys)}",
                "export the model again with the names ONNX Stable Diffusion apps use (convert it to ONNX)");

    /// <summary>The element type of each tensor input and output this backend can pass.</summary>
    public static DType DTypeOf(NodeMetadata meta, string file, string name) => meta.ElementDataType switch
    {
        TensorElementType.Float => DType.Float32,
        TensorElementType.Float16 => DType.Float16,
        TensorElementType.Int64 => DType.Int64,
        TensorElementType.Int32 => DType.Int32,
        TensorElementType.Double => DType.Float64,
        var other => throw new UserInputException(file, $"its '{name}' is a {other} tensor, which no Stable Diffusion export uses",
            "export the model again (convert it to ONNX)"),
    };

    public DType InputDType(string name) => DTypeOf(Inputs[name], Path, name);

    public DType OutputDType(string name) => DTypeOf(Outputs[name], Path, name);

    /// <summary>A dimension of an input as the graph fixes it; null when symbolic (a batch, a height).</summary>
    public long? FixedDim(string input, int axis)
    {
        var dims = Inputs[input].Dimensions;
        return axis < dims.Length && dims[axis] > 0 ? dims[axis] : null;
    }

    // ---- running ----

    public OrtIoBinding CreateBinding() => session.CreateIoBinding();

    public void Run(OrtIoBinding binding)
    {
        using var runOptions = new RunOptions();
        session.RunWithBinding(runOptions, binding);
    }

    /// <summary>
    /// Runs the graph on <paramref name="inputs"/> and returns <paramref name="outputs"/> as float32 libtorch tensors.
    /// ONNX Runtime allocates these outputs (their shapes are known only after the run; text encoder and VAE run once per
    /// image, so the one copy into libtorch costs nothing next to them); an fp16 output is cast.
    /// </summary>
    public Tensor[] Run(IReadOnlyList<(string Name, Tensor Value)> inputs, IReadOnlyList<string> outputs)
    {
        using var binding = session.CreateIoBinding();
        using var bound = new BoundInputs();
        foreach (var (name, value) in inputs)
            binding.BindInput(name, bound.Add(value, InputDType(name)));
        foreach (var name in outputs) binding.BindOutputToDevice(name, OrtMemoryInfo.DefaultInstance);
        Run(binding);
        using var values = binding.GetOutputValues();
        var result = new Tensor[values.Count];
        try
        {
            for (var i = 0; i < values.Count; i++)
            {
                var dtype = OutputDType(outputs[i]);
                using var copied = torch.FromBytes(values[i].GetTensorDataAsSpan<byte>(), values[i].GetTensorTypeAndShape().Shape, dtype);
                result[i] = dtype == DType.Float32 ? copied.Alias() : copied.To(DType.Float32);
            }
            return result;
        }
        catch
        {
            foreach (var t in result) t?.Dispose();
            throw;
        }
    }

    /// <summary>An OrtValue over a CPU tensor's memory (the tensor must be contiguous and outlive the value).</summary>
    public static OrtValue Over(Tensor tensor) =>
        OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, ElementType(tensor.DType), tensor.Shape, tensor.DataPointer, tensor.NumEl * tensor.ElementSize);

    public static TensorElementType ElementType(DType dtype) => dtype switch
    {
        DType.Float32 => TensorElementType.Float,
        DType.Float16 => TensorElementType.Float16,
        DType.Int64 => TensorElementType.Int64,
        DType.Int32 => TensorElementType.Int32,
        DType.Float64 => TensorElementType.Double,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "not a type an ONNX Stable Diffusion graph takes"),
    };

    /// <summary>
    /// <paramref name="tensor"/> as the graph wants it: the same handle's memory when dtype matches and it is contiguous on
    /// the CPU, else a converted copy (owned by the caller).
    /// </summary>
    public static Tensor AsInput(Tensor tensor, DType wanted)
    {
        if (tensor.DType == wanted && tensor.Device == Device.Cpu && tensor.IsContiguous) return tensor.Alias();
        using var onCpu = tensor.To(Device.Cpu, wanted);
        return onCpu.Contiguous();
    }

    public void Dispose() => session.Dispose();

    /// <summary>The tensors and values of one run's inputs, kept alive until it ends.</summary>
    private sealed class BoundInputs : IDisposable
    {
        private readonly List<IDisposable> owned = [];

        public OrtValue Add(Tensor value, DType wanted)
        {
            var input = AsInput(value, wanted);
            owned.Add(input);
            var ort = Over(input);
            owned.Add(ort);
            return ort;
        }

        public void Dispose()
        {
            for (var i = owned.Count - 1; i >= 0; i--) owned[i].Dispose();
        }
    }
}
