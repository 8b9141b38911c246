using System.Text.Json;
using System.Text.Json.Nodes;
using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.Loading;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Tokenization;
using SdAppliance.Models.Unet;
using SdAppliance.Models.Vae;
using SdAppliance.Torch;

namespace SdAppliance.Onnx.Runtime;

/// <summary>
/// An exported ONNX pipeline folder run by ONNX Runtime, for the same <c>StableDiffusionPipeline</c> as libtorch's models:
/// <c>model_index.json</c>, <c>tokenizer/</c> (SDXL: <c>tokenizer_2/</c>), <c>scheduler/</c>, and a <c>model.onnx</c>
/// in <c>text_encoder/</c> (<c>text_encoder_2/</c>), <c>unet/</c>, <c>vae_decoder/</c> and, for img2img,
/// <c>vae_encoder/</c>. What differs between optimum's, diffusers' and OnnxStack's exports (id and timestep types and
/// ranks, fp16 graphs, the VAE encoder's output) is read from each graph; the family and the VAE's numbers come from the
/// <c>config.json</c> an exporter writes beside each graph (optimum does), else from the graphs' shapes and the family's
/// defaults. Networks run on ONNX Runtime; the pipeline's tensors stay libtorch CPU float32.
/// </summary>
public sealed class OnnxDiffusionModel : IDiffusionModel
{
    private readonly OnnxTextEncoder textEncoder;
    private readonly OnnxTextEncoder? textEncoder2;
    private readonly OnnxUnet unet;
    private readonly OnnxSession vaeDecoder;
    private readonly OnnxSession? vaeEncoder;
    private readonly string decoderInput, decoderOutput;
    private readonly string? encoderOutput;

    private OnnxDiffusionModel(string folder, OnnxFolderFacts facts, OnnxTextEncoder textEncoder, OnnxTextEncoder? textEncoder2, OnnxUnet unet,
        OnnxSession vaeDecoder, OnnxSession? vaeEncoder, ClipTokenizer tokenizer, ClipTokenizer? tokenizer2, JsonObject scheduler)
    {
        SourcePath = folder;
        Family = facts.Family;
        this.textEncoder = textEncoder;
        this.textEncoder2 = textEncoder2;
        this.unet = unet;
        this.vaeDecoder = vaeDecoder;
        this.vaeEncoder = vaeEncoder;
        Tokenizer = tokenizer;
        Tokenizer2 = tokenizer2;
        SchedulerConfig = scheduler;
        VaeScaleFactor = facts.VaeScaleFactor;
        VaeScalingFactor = facts.VaeScalingFactor;
        LatentChannels = unet.LatentChannels ?? facts.LatentChannels;
        DefaultResolution = facts.SampleSize is { } size ? size * VaeScaleFactor
            : unet.FixedLatentHeight is { } h ? (int)h * VaeScaleFactor
            : DefaultResolutionOf(Family, PredictionType);
        PromptEncoder = new OnnxPromptEncoder(textEncoder, textEncoder2, facts.TextEncoderLayers);
        vaeDecoder.RequireInput("latent_sample", "the latents");
        decoderInput = "latent_sample";
        decoderOutput = vaeDecoder.RequireOutput("the decoded image", "sample");
        if (vaeEncoder is not null)
        {
            vaeEncoder.RequireInput("sample", "the image");
            encoderOutput = vaeEncoder.RequireOutput("the image's latents", "latent_parameters", "latent_sample");
        }
    }

    /// <summary>Whether <paramref name="folder"/> looks like an ONNX pipeline (model_index.json and unet/model.onnx).</summary>
    public static bool IsOnnxFolder(string folder) => File.Exists(Path.Combine(folder, "model_index.json")) && File.Exists(Path.Combine(folder, "unet", "model.onnx"));

    /// <summary>
    /// Opens the export in <paramref name="folder"/>: one ONNX Runtime session per network, with
    /// <paramref name="options"/>' provider, threads and optimisation level. A missing or damaged file, an input the
    /// pipeline needs and the graph lacks, an opset the runtime does not implement: one error naming the file and the fix.
    /// </summary>
    public static OnnxDiffusionModel Load(string folder, OnnxRuntimeOptions? options = null)
    {
        options ??= new OnnxRuntimeOptions();
        if (!Directory.Exists(folder))
            throw new UserInputException(folder, "does not exist", "give an ONNX export's folder (model_index.json, unet/model.onnx, ...)");
        if (!IsOnnxFolder(folder))
            throw new UserInputException(folder, "is not an ONNX export: it needs model_index.json and unet/model.onnx (with text_encoder/, vae_decoder/, tokenizer/, scheduler/)",
                "export the model first (convert it to ONNX), or run it on the libtorch backend");
        if (options.Provider == OnnxProvider.Cuda) OnnxSession.RequireProvider("CUDAExecutionProvider", options.Provider);
        var facts = OnnxFolderFacts.Read(folder);
        var disposables = new List<IDisposable>();
        T Keep<T>(T item) where T : IDisposable
        {
            disposables.Add(item);
            return item;
        }
        try
        {
            var unet = Keep(new OnnxUnet(Keep(OnnxSession.Open(Path.Combine(folder, "unet", "model.onnx"), options))));
            var family = facts.Family != ModelFamily.Unknown ? facts.Family
                : unet.IsSdxl ? ModelFamily.XlBase
                : unet.CrossAttentionDim == 1024 ? ModelFamily.V2 : ModelFamily.V1;
            facts = facts with { Family = family };
            if (family == ModelFamily.XlBase && !unet.IsSdxl)
                throw new UserInputException(unet.Path, "belongs to an SDXL export but has no text_embeds and time_ids inputs", "export the model again (convert it to ONNX)");
            var textEncoder = Keep(new OnnxTextEncoder(Keep(OnnxSession.Open(Path.Combine(folder, "text_encoder", "model.onnx"), options)), facts.TextEncoderConfig));
            OnnxTextEncoder? textEncoder2 = null;
            if (family == ModelFamily.XlBase)
                textEncoder2 = Keep(new OnnxTextEncoder(Keep(OnnxSession.Open(Path.Combine(folder, "text_encoder_2", "model.onnx"), options)), facts.TextEncoder2Config));
            var vaeDecoder = Keep(OnnxSession.Open(Path.Combine(folder, "vae_decoder", "model.onnx"), options));
            var encoderFile = Path.Combine(folder, "vae_encoder", "model.onnx");
            var vaeEncoder = File.Exists(encoderFile) ? Keep(OnnxSession.Open(encoderFile, options)) : null;
            var (tokenizer, tokenizer2) = ModelLoader.LoadTokenizers(folder, family, new ModelLoadOptions(SearchRoots: options.SearchRoots));
            var scheduler = ModelLoader.FolderSchedulerConfig(folder, options.PredictionType);
            return new OnnxDiffusionModel(folder, facts, textEncoder, textEncoder2, unet, vaeDecoder, vaeEncoder, tokenizer, tokenizer2, scheduler);
        }
        catch
        {
            for (var i = disposables.Count - 1; i >= 0; i--) disposables[i].Dispose();
            throw;
        }
    }

    /// <summary>
    /// What <see cref="Load"/> would find without opening a session (for catalogs): the family and the prediction type,
    /// from the folder's files. A folder whose configs do not tell SD 1.x from SD 2.x reads as SD 1.x until loaded.
    /// </summary>
    public static ModelDescription Describe(string folder)
    {
        if (!IsOnnxFolder(folder))
            throw new UserInputException(folder, "is not an ONNX export: it needs model_index.json and unet/model.onnx");
        var facts = OnnxFolderFacts.Read(folder);
        var scheduler = ModelLoader.FolderSchedulerConfig(folder, null);
        return new ModelDescription(facts.Family == ModelFamily.Unknown ? ModelFamily.V1 : facts.Family,
            scheduler["prediction_type"]?.GetValue<string>() ?? "epsilon");
    }

    public string SourcePath { get; }
    public string Name => Path.GetFileName(Path.TrimEndingDirectorySeparator(SourcePath));
    public string Backend => "onnxruntime";
    public ModelFamily Family { get; }
    public bool IsSdxl => textEncoder2 is not null;
    public ClipTokenizer Tokenizer { get; }
    public ClipTokenizer? Tokenizer2 { get; }
    public PromptEncoder PromptEncoder { get; }
    public JsonObject SchedulerConfig { get; }
    public string PredictionType => SchedulerConfig["prediction_type"]?.GetValue<string>() ?? "epsilon";
    public int VaeScaleFactor { get; }
    public int DefaultResolution { get; }
    public long LatentChannels { get; }
    public double VaeScalingFactor { get; }
    public Device Device => Device.Cpu;
    public DType DType => DType.Float32;

    /// <summary>Whether img2img can run: the export has a <c>vae_encoder</c>.</summary>
    public bool HasVaeEncoder => vaeEncoder is not null;

    /// <summary>
    /// Whether the VAE encoder samples inside its graph (diffusers' script exports <c>latent_sample</c>): its noise is
    /// ONNX Runtime's own, not the seed's, so img2img from such an export does not repeat from its seed.
    /// </summary>
    public bool EncoderSamplesInGraph => encoderOutput == "latent_sample";

    public int? TimeCondProjDim => unet.TimeCondProjDim;

    public Tensor PredictNoise(Tensor sample, double timestep, Tensor encoderHiddenStates, UNetAddedConditions? addedConditions, Tensor? timestepCond = null) =>
        unet.Predict(sample, timestep, encoderHiddenStates, addedConditions, timestepCond);

    public Tensor DecodeLatents(Tensor latents) => vaeDecoder.Run([(decoderInput, latents)], [decoderOutput])[0];

    /// <summary>
    /// The posterior of <paramref name="pixels"/>: from <c>latent_parameters</c> (mean and log-variance, optimum), sampled
    /// with the seed's noise as libtorch's is; or, from a graph that outputs <c>latent_sample</c>, that sample as a
    /// distribution with no spread (its draw already happened inside the graph, see <see cref="EncoderSamplesInGraph"/>).
    /// </summary>
    public DiagonalGaussianDistribution EncodeImages(Tensor pixels)
    {
        if (vaeEncoder is null)
            throw new UserInputException(Path.Combine(SourcePath, "vae_encoder", "model.onnx"), "is missing: this export has no VAE encoder, which img2img needs",
                "export the model again with its VAE encoder (convert it to ONNX), or generate without an init image");
        var moments = vaeEncoder.Run([("sample", pixels)], [encoderOutput!])[0];
        if (!EncoderSamplesInGraph) return new DiagonalGaussianDistribution(moments);
        using (moments)
        {
            using var zeros = torch.ZerosLike(moments);
            return new DiagonalGaussianDistribution(torch.Cat([moments, zeros], 1), deterministic: true);
        }
    }

    /// <summary>What SD models of <paramref name="family"/> were trained at, for exports that do not say.</summary>
    private static int DefaultResolutionOf(ModelFamily family, string prediction) => family switch
    {
        ModelFamily.XlBase => 1024,
        ModelFamily.V2 when prediction == "v_prediction" => 768,
        _ => 512,
    };

    public void Dispose()
    {
        unet.Dispose();
        textEncoder.Dispose();
        textEncoder2?.Dispose();
        vaeDecoder.Dispose();
        vaeEncoder?.Dispose();
    }
}

/// <summary>
/// What an export's files say without running it: <c>model_index.json</c> (checked to be JSON), the <c>config.json</c>
/// beside each graph where the exporter wrote one (optimum writes each network's diffusers/transformers config there;
/// diffusers' script writes the VAE's and OnnxStack none), and a second text encoder for SDXL.
/// </summary>
internal sealed record OnnxFolderFacts(
    ModelFamily Family, int VaeScaleFactor, double VaeScalingFactor, long LatentChannels, int? SampleSize,
    ClipTextConfig? TextEncoderConfig, ClipTextConfig? TextEncoder2Config, int TextEncoderLayers)
{
    public static OnnxFolderFacts Read(string folder)
    {
        var index = Path.Combine(folder, "model_index.json");
        string? className;
        try
        {
            className = (JsonNode.Parse(DiffusersConfig.ReadText(index)) as JsonObject)?["_class_name"]?.GetValue<string>();
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            throw new UserInputException(index, $"cannot be read: {e.Message}", "export the model again (convert it to ONNX)", e);
        }
        var isSdxl = Directory.Exists(Path.Combine(folder, "text_encoder_2")) || (className?.Contains("XL", StringComparison.Ordinal) ?? false);
        var te = Optional(folder, "text_encoder", ClipTextConfig.Load);
        var te2 = Optional(folder, "text_encoder_2", ClipTextConfig.Load);
        var unet = Optional(folder, "unet", DiffusersConfig.Load<UNet2DConditionConfig>);
        var vae = Optional(folder, "vae_decoder", DiffusersConfig.Load<AutoencoderKLConfig>)
            ?? Optional(folder, "vae_encoder", DiffusersConfig.Load<AutoencoderKLConfig>);
        var family = isSdxl ? ModelFamily.XlBase : te is not null ? ModelLoader.FolderFamily(false, te) : ModelFamily.Unknown;
        return new OnnxFolderFacts(
            family,
            vae is not null ? 1 << (vae.BlockOutChannels.Count - 1) : 8,
            vae?.ScalingFactor ?? (isSdxl ? 0.13025 : 0.18215),
            unet?.InChannels ?? vae?.LatentChannels ?? 4,
            unet?.SampleSize is { Count: > 0 } s ? s[0] : null,
            te, te2,
            te?.NumHiddenLayers ?? 12);
    }

    // An exporter's config is optional; one that is there but unreadable is an error naming it.
    private static T? Optional<T>(string folder, string component, Func<string, T> load) where T : class
    {
        var file = Path.Combine(folder, component, "config.json");
        return File.Exists(file) ? load(file) : null;
    }
}
