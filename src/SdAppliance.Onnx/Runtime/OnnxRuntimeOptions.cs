namespace SdAppliance.Onnx.Runtime;

/// <summary>Where ONNX Runtime runs a model.</summary>
public enum OnnxProvider
{
    Cpu,
    Cuda,
}

/// <summary>ONNX Runtime's session settings, from our options.</summary>
public sealed record OnnxRuntimeOptions
{
    public OnnxProvider Provider { get; init; } = OnnxProvider.Cpu;

    /// <summary>The CUDA device index.</summary>
    public int DeviceId { get; init; }

    /// <summary>Threads inside one operator; 0 lets ONNX Runtime choose (the physical cores).</summary>
    public int IntraOpThreads { get; init; }

    /// <summary>
    /// Whether idle intra-op threads spin waiting for work (ONNX Runtime's default): a little faster on cores of one's own,
    /// much slower where other work shares them (off by default).
    /// </summary>
    public bool AllowSpinning { get; init; }

    /// <summary>ONNX Runtime's graph optimisation level: disabled, basic, extended or all.</summary>
    public string GraphOptimizationLevel { get; init; } = "all";

    /// <summary><c>epsilon</c> or <c>v_prediction</c>, overriding the export's scheduler config.</summary>
    public string? PredictionType { get; init; }

    /// <summary>Folders holding <c>models/tokenizers/</c>, for an export without its <c>tokenizer/</c> (as ModelLoadOptions').</summary>
    public IReadOnlyList<string>? SearchRoots { get; init; }
}
