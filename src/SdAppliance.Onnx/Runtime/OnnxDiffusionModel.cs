using System.Text.Json.Nodes;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Models.Loading;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Tokenization;
using SdAppliance.Models.Unet;
using SdAppliance.Models.Vae;
using SdAppliance.Torch;

namespace SdAppliance.Onnx.Runtime;

/// <summary>An exported ONNX pipeline folder run by ONNX Runtime, for the same <c>StableDiffusionPipeline</c> as libtorch's models.</summary>
public sealed class OnnxDiffusionModel : IDiffusionModel
{
    private OnnxDiffusionModel() => throw new NotImplementedException("being written");

    /// <summary>Whether <paramref name="folder"/> looks like an ONNX pipeline (model_index.json and unet/model.onnx).</summary>
    public static bool IsOnnxFolder(string folder) => File.Exists(Path.Combine(folder, "model_index.json")) && File.Exists(Path.Combine(folder, "unet", "model.onnx"));

    public static OnnxDiffusionModel Load(string folder, OnnxRuntimeOptions? options = null) => throw new NotImplementedException("being written");

    public string SourcePath => throw new NotImplementedException();
    public string Name => throw new NotImplementedException();
    public string Backend => "onnxruntime";
    public ModelFamily Family => throw new NotImplementedException();
    public bool IsSdxl => throw new NotImplementedException();
    public ClipTokenizer Tokenizer => throw new NotImplementedException();
    public ClipTokenizer? Tokenizer2 => throw new NotImplementedException();
    public PromptEncoder PromptEncoder => throw new NotImplementedException();
    public JsonObject SchedulerConfig => throw new NotImplementedException();
    public int VaeScaleFactor => throw new NotImplementedException();
    public int DefaultResolution => throw new NotImplementedException();
    public long LatentChannels => throw new NotImplementedException();
    public double VaeScalingFactor => throw new NotImplementedException();
    public Device Device => Device.Cpu;
    public DType DType => DType.Float32;
    public Tensor PredictNoise(Tensor sample, double timestep, Tensor encoderHiddenStates, UNetAddedConditions? addedConditions) => throw new NotImplementedException();
    public Tensor DecodeLatents(Tensor latents) => throw new NotImplementedException();
    public DiagonalGaussianDistribution EncodeImages(Tensor pixels) => throw new NotImplementedException();
    public void Dispose() { }
}
