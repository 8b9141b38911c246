using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Diffusion.Prompts;
using SdAppliance.Formats;

namespace SdAppliance.Onnx.Runtime;

/// <summary>The engine that runs a model's networks.</summary>
public enum InferenceBackend
{
    /// <summary>Our modules on libtorch: every model, LoRAs, hypernetworks and embeddings at run time, training.</summary>
    Libtorch,

    /// <summary>An ONNX export on ONNX Runtime: its networks fixed at export.</summary>
    OnnxRuntime,
}

/// <summary>Which engine runs a generation, and why (front ends print the reason).</summary>
public sealed record BackendDecision(InferenceBackend Backend, string Reason)
{
    /// <summary>The name users give and see: <c>libtorch</c> or <c>onnx</c>.</summary>
    public string Name => BackendChoice.NameOf(Backend);
}

/// <summary>
/// The rule that picks the engine for a generation: <c>libtorch</c> and <c>onnx</c> are taken as asked (refused where the
/// model cannot run on it); <c>auto</c> runs ONNX Runtime for a model that has an export and asks for no LoRA at run time,
/// where ONNX Runtime is the faster engine here, and libtorch otherwise.
/// </summary>
public static class BackendChoice
{
    /// <summary>What users may ask for.</summary>
    public static readonly IReadOnlyList<string> Names = [Auto, "libtorch", "onnx"];

    /// <summary>The name that leaves the choice to the rule (the default everywhere).</summary>
    public const string Auto = "auto";

    /// <summary>
    /// Whether ONNX Runtime is the faster engine, as measured by <c>tools/bench-onnx</c> against the bar the issue set (a whole
    /// SD 1.5-shaped UNet step at ≤ 0.6× libtorch's time on CPU). Measured on a 2-core box in one interleaved run: 0.51×
    /// (standard attention) and 0.46× (fused) for the SD 1.5 step at 256x256, 0.31× for a whole 20-step demo image; so
    /// <c>auto</c> runs an export where the model has one. Set it back to false if a measurement says otherwise.
    /// </summary>
    public const bool OnnxFasterByMeasurement = true;

    public static string NameOf(InferenceBackend backend) => backend == InferenceBackend.OnnxRuntime ? "onnx" : "libtorch";

    /// <summary>
    /// The engine for a model at <paramref name="modelPath"/> (an ONNX export is a folder with model_index.json and
    /// unet/model.onnx; a folder may hold both an export and diffusers weights) and a request that asks for
    /// <paramref name="runtimeAdapters"/> (LoRAs, hypernetworks) at run time. <paramref name="onnxIsFaster"/> says whether
    /// ONNX Runtime is the faster engine here.
    /// </summary>
    /// <exception cref="UserInputException">naming <c>backend</c> for an unknown name, or an engine the model cannot run on.</exception>
    public static BackendDecision Choose(string asked, string modelPath, bool runtimeAdapters, bool onnxIsFaster = OnnxFasterByMeasurement) =>
        Choose(asked, HasOnnxExport(modelPath), HasLibtorchWeights(modelPath), runtimeAdapters, onnxIsFaster, modelPath);

    /// <summary>The rule itself, over what is known of the model.</summary>
    public static BackendDecision Choose(string asked, bool hasOnnxExport, bool hasLibtorchWeights, bool runtimeAdapters, bool onnxIsFaster, string model)
    {
        switch (asked.ToLowerInvariant())
        {
            case "onnx" or "onnxruntime":
                if (!hasOnnxExport)
                    throw new UserInputException("backend", $"onnx was asked, but '{model}' has no ONNX export (model_index.json and unet/model.onnx)",
                        "export it first (convert it to ONNX) and give the export's folder, or use the libtorch backend");
                return new(InferenceBackend.OnnxRuntime, "asked for");
            case "libtorch" or "torch":
                if (!hasLibtorchWeights)
                    throw new UserInputException("backend", $"libtorch was asked, but '{model}' is an ONNX export only (it has no diffusers or checkpoint weights)",
                        "use the onnx backend, or give the model it was exported from");
                return new(InferenceBackend.Libtorch, "asked for");
            case Auto:
                if (!hasOnnxExport) return new(InferenceBackend.Libtorch, "the model has no ONNX export");
                if (!hasLibtorchWeights)
                    return new(InferenceBackend.OnnxRuntime, "the model is an ONNX export only");
                if (runtimeAdapters)
                    return new(InferenceBackend.Libtorch, "the request applies a LoRA or hypernetwork at run time, which an export's fixed networks cannot take");
                return onnxIsFaster
                    ? new(InferenceBackend.OnnxRuntime, "the model has an ONNX export and ONNX Runtime is the faster engine here")
                    : new(InferenceBackend.Libtorch, "the model has an ONNX export, but ONNX Runtime has not measured faster than libtorch here");
            default:
                throw new UserInputException("backend", $"'{asked}' is not one of {string.Join(", ", Names)}");
        }
    }

    /// <summary>
    /// Whether <paramref name="request"/> applies networks at run time that an export cannot take: LoRAs given with it or
    /// named in its prompt (<c>&lt;lora:&gt;</c>, <c>&lt;lyco:&gt;</c>), hypernetworks (<c>&lt;hypernet:&gt;</c>).
    /// </summary>
    public static bool AsksForRuntimeAdapters(GenerationRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return request.Loras.Count > 0
            || ExtraNetworkTags.Extract(request.Prompt).Tags.Any(t => t.IsLora || t.Kind == ExtraNetworkTag.Hypernetwork);
    }

    /// <summary>Whether the model is (or its folder holds) an ONNX export.</summary>
    public static bool HasOnnxExport(string modelPath) => Directory.Exists(modelPath) && OnnxDiffusionModel.IsOnnxFolder(modelPath);

    /// <summary>Whether the model is an ONNX export and nothing else (no weights libtorch could load).</summary>
    public static bool IsExportOnly(string modelPath) => HasOnnxExport(modelPath) && !HasLibtorchWeights(modelPath);

    /// <summary>Whether libtorch can load the model: a single checkpoint file, or a folder with the UNet's diffusers weights.</summary>
    public static bool HasLibtorchWeights(string modelPath)
    {
        if (File.Exists(modelPath)) return true;
        var unet = Path.Combine(modelPath, "unet");
        return Directory.Exists(unet) && Directory.EnumerateFiles(unet).Any(f =>
            Path.GetFileName(f).StartsWith("diffusion_pytorch_model", StringComparison.Ordinal) && Path.GetExtension(f) is ".safetensors" or ".bin");
    }
}
