using System.Text.Json;
using System.Text.Json.Nodes;
using Onnx;
using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Models.Adapters;
using SdAppliance.Models.Conversion;
using SdAppliance.Models.Loading;
using SdAppliance.Models.Tokenization;
using SdAppliance.Onnx.Graphs;

namespace SdAppliance.Onnx.Export;

/// <summary>A LoRA merged into the export at its strengths.</summary>
public sealed record OnnxExportLora(string Path, double TextEncoderWeight, double UnetWeight);

/// <summary>What an export wrote.</summary>
/// <param name="Files">Every file of the folder, relative to it with '/' between folders, in order.</param>
public sealed record OnnxExportResult(string Folder, IReadOnlyList<string> Files, long Bytes, IReadOnlyList<string> Warnings);

/// <summary>
/// A whole pipeline to the folder layout ONNX Stable Diffusion apps load: <c>model_index.json</c>,
/// <c>text_encoder/</c> (SDXL: <c>text_encoder_2/</c>), <c>unet/</c>, <c>vae_encoder/</c>, <c>vae_decoder/</c>,
/// <c>tokenizer/</c>, <c>scheduler/</c>; LoRAs merged, textual-inversion tokens baked in.
/// <para>
/// The two layouts are what the tools write. Optimum (<c>ORTStableDiffusionPipeline.save_pretrained</c>, which
/// <c>optimum-cli export onnx</c>'s output loads into): each <c>model.onnx</c> with the submodel's <c>config.json</c>
/// beside it, weights past protobuf's 2 GiB in <c>model.onnx_data</c>, and a <c>model_index.json</c> whose networks are
/// <c>["diffusers", "OnnxRuntimeModel"]</c> under an <c>ORTStableDiffusion(XL)Pipeline</c> class. diffusers
/// (<c>scripts/convert_stable_diffusion_checkpoint_to_onnx.py</c>, saved by <c>OnnxStableDiffusionPipeline</c>): the same
/// folders, the UNet's weights always in <c>weights.pb</c>, the class <c>OnnxStableDiffusionPipeline</c>; diffusers has no
/// ONNX SDXL pipeline. Both get the <c>config.json</c> files (diffusers' loader ignores them; ours reads the VAE's scaling
/// factor and the UNet's sample size from them). The safety checker and feature extractor are absent (<c>[null, null]</c>).
/// The tokenizers are written from the model's own (<see cref="ClipTokenizer.SaveToFolder"/>), baked-in tokens as added tokens.
/// </para>
/// <para>
/// The folder is written under a hidden temporary name beside the target and renamed into place at the end
/// (<see cref="AtomicFile.WriteFolder"/>): a failed or cancelled export leaves nothing under the target's name.
/// </para>
/// </summary>
public static class OnnxPipelineExporter
{
    public const string ModelFileName = "model.onnx";

    /// <summary>Optimum's external data file (ONNX's <c>save_model(..., location=)</c> as optimum calls it).</summary>
    public const string OptimumExternalData = "model.onnx_data";

    /// <summary>diffusers' conversion script's external data file (the UNet's, always).</summary>
    public const string DiffusersExternalData = "weights.pb";

    /// <summary>The steps of an export of <paramref name="model"/> in order; <see cref="Export"/>'s progress reports each as it starts.</summary>
    public static IReadOnlyList<string> Parts(StableDiffusionModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var parts = new List<string> { "text_encoder" };
        if (model.TextEncoder2 is not null) parts.Add("text_encoder_2");
        parts.AddRange(["unet", "vae_encoder", "vae_decoder", "tokenizer"]);
        if (model.Tokenizer2 is not null) parts.Add("tokenizer_2");
        parts.AddRange(["scheduler", "model_index.json"]);
        return parts;
    }

    /// <summary>
    /// Exports <paramref name="model"/> to <paramref name="outputFolder"/> with <paramref name="loras"/> merged (undone
    /// afterwards: the model is left as it was given) and the tokens of <paramref name="embeddingFiles"/> baked in.
    /// Refused before anything is written: an existing target without <see cref="OnnxExportOptions.Overwrite"/>, an
    /// opset below 17, SDXL in diffusers' layout, a LoRA that matches no layer of the model.
    /// </summary>
    public static OnnxExportResult Export(StableDiffusionModel model, string outputFolder, OnnxExportOptions options,
        IReadOnlyList<OnnxExportLora>? loras = null, IReadOnlyList<string>? embeddingFiles = null,
        IProgress<string>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        // Its one text encoder is a text_encoder_2 and its time ids are five: the export layouts have no place for them yet.
        if (model.Family == ModelFamily.XlRefiner)
            throw new UserInputException(model.SourcePath, "is an SDXL refiner; exporting a refiner to ONNX is not supported", "run the refiner on libtorch");
        var networks = new List<OnnxNetwork> { new("text_encoder", baked => ClipTextEncoderOnnx.Build(model.TextEncoder, options, baked), ModelComponents.TextEncoder) };
        if (model.TextEncoder2 is { } textEncoder2)
            networks.Add(new("text_encoder_2", baked => ClipTextEncoderOnnx.Build(textEncoder2, options, baked), ModelComponents.TextEncoder2));
        networks.Add(new("unet", _ => UNetOnnx.Build(model.Unet, options), ModelComponents.Unet));
        networks.Add(new("vae_encoder", _ => VaeOnnx.BuildEncoder(model.Vae, options), ModelComponents.Vae));
        networks.Add(new("vae_decoder", _ => VaeOnnx.BuildDecoder(model.Vae, options), ModelComponents.Vae));
        return Write(model, outputFolder, options, networks, loras ?? [], embeddingFiles ?? [], progress, cancellationToken);
    }

    /// <summary>
    /// One network of the folder: its subfolder, the builder that makes its graph (given a text encoder's baked-in token
    /// table as a weight override, null otherwise), the component whose config.json goes beside it.
    /// </summary>
    internal sealed record OnnxNetwork(string Folder, Func<IReadOnlyDictionary<string, Torch.Tensor>?, ModelProto> Build, string ConfigComponent);

    /// <summary>The export with its networks given: <see cref="Export"/>'s builders, or (in tests of the folder itself) small graphs.</summary>
    internal static OnnxExportResult Write(StableDiffusionModel model, string outputFolder, OnnxExportOptions options, IReadOnlyList<OnnxNetwork> networks,
        IReadOnlyList<OnnxExportLora> loras, IReadOnlyList<string> embeddingFiles, IProgress<string>? progress, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(outputFolder);
        var target = Path.TrimEndingDirectorySeparator(Path.GetFullPath(outputFolder));
        Check(model, target, options);
        var warnings = new List<string>();
        var files = new List<string>();
        long bytes = 0;

        var loraFiles = new List<LoraFile>();
        var embeddings = new List<TextualInversionEmbedding>();
        var baked = new Dictionary<string, BakedTextualInversion>(StringComparer.Ordinal);
        try
        {
            foreach (var lora in loras) loraFiles.Add(LoadLora(lora));
            foreach (var file in embeddingFiles) embeddings.Add(TextualInversionEmbedding.Load(file));
            cancellationToken.ThrowIfCancellationRequested();
            using var patch = loraFiles.Count == 0 ? null : LoraPatch.Apply(
                [.. loraFiles.Select((file, i) => new LoraApplication(file, loras[i].TextEncoderWeight, loras[i].UnetWeight))],
                LoraModelNames.Targets(model), LoraModelNames.AlternateNames(model.Unet));
            if (patch is not null) warnings.AddRange(Unmatched(loraFiles, patch));
            if (embeddings.Count > 0) Bake(model, embeddings, baked);
            var tokenizers = new List<(string Sub, ClipTokenizer Tokenizer)> { ("tokenizer", baked.GetValueOrDefault("text_encoder")?.Tokenizer ?? model.Tokenizer) };
            if (model.Tokenizer2 is { } tokenizer2) tokenizers.Add(("tokenizer_2", baked.GetValueOrDefault("text_encoder_2")?.Tokenizer ?? tokenizer2));

            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            AtomicFile.WriteFolder(target, temp =>
            {
                var configs = ComponentConfigs.Of(model);
                foreach (var network in networks)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    progress?.Report(network.Folder);
                    var folder = Directory.CreateDirectory(Path.Combine(temp, network.Folder)).FullName;
                    var (externalName, forceExternal) = ExternalData(options.Layout, network.Folder);
                    var bakedIn = baked.GetValueOrDefault(network.Folder);
                    OnnxFile.Save(network.Build(bakedIn?.WeightOverrides), Path.Combine(folder, ModelFileName), externalName, forceExternal);
                    WriteJson(Path.Combine(folder, "config.json"), SubmodelConfig(configs[network.ConfigComponent], network.ConfigComponent, options.Precision, bakedIn));
                }
                foreach (var (sub, tokenizer) in tokenizers)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    progress?.Report(sub);
                    tokenizer.SaveToFolder(Path.Combine(temp, sub));
                }
                progress?.Report("scheduler");
                var scheduler = SchedulerConfig(model);
                WriteJson(Path.Combine(Directory.CreateDirectory(Path.Combine(temp, "scheduler")).FullName, "scheduler_config.json"), scheduler);
                progress?.Report("model_index.json");
                WriteJson(Path.Combine(temp, "model_index.json"), ModelIndex(model, options.Layout, networks, scheduler));
                // The last moment it can stop before the rename: after it the folder is whole.
                cancellationToken.ThrowIfCancellationRequested();
                foreach (var file in Directory.EnumerateFiles(temp, "*", SearchOption.AllDirectories))
                {
                    files.Add(Path.GetRelativePath(temp, file).Replace('\\', '/'));
                    bytes += new FileInfo(file).Length;
                }
            });
        }
        finally
        {
            foreach (var file in loraFiles) file.Dispose();
            foreach (var embedding in embeddings) embedding.Dispose();
            foreach (var table in baked.Values) table.Dispose();
        }
        files.Sort(StringComparer.Ordinal);
        return new OnnxExportResult(target, files, bytes, warnings);
    }

    /// <summary>
    /// What <see cref="Export"/> refuses before it reads the model: an opset below 17, a file at the target, an existing
    /// folder without <see cref="OnnxExportOptions.Overwrite"/>. Front ends call it before loading a model (minutes for a large one).
    /// </summary>
    public static void CheckTarget(string outputFolder, OnnxExportOptions options)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(outputFolder);
        ArgumentNullException.ThrowIfNull(options);
        var target = Path.TrimEndingDirectorySeparator(Path.GetFullPath(outputFolder));
        if (options.Opset < OnnxGraph.DefaultOpset)
            throw new UserInputException("opset", $"{options.Opset} is older than the exported operators need", $"choose opset {OnnxGraph.DefaultOpset} or newer");
        if (File.Exists(target))
            throw new UserInputException(target, "is a file; an ONNX export is a folder", "choose a folder path that does not exist yet");
        if (Directory.Exists(target) && !options.Overwrite)
            throw new UserInputException(target, "already exists", "choose another folder, or overwrite it");
    }

    /// <summary>What is refused before anything is written.</summary>
    private static void Check(StableDiffusionModel model, string target, OnnxExportOptions options)
    {
        CheckTarget(target, options);
        if (model.IsSdxl && options.Layout == OnnxLayout.Diffusers)
            throw new UserInputException("layout", "diffusers has no ONNX pipeline for SDXL (OnnxStableDiffusionPipeline runs SD 1.x and 2.x)",
                "export SDXL in optimum's layout (ORTStableDiffusionXLPipeline loads it)");
    }

    private static LoraFile LoadLora(OnnxExportLora lora)
    {
        foreach (var (weight, name) in new[] { (lora.TextEncoderWeight, "text encoder"), (lora.UnetWeight, "UNet") })
            if (!double.IsFinite(weight) || Math.Abs(weight) > 10)
                throw new UserInputException(lora.Path, $"{weight} is not a LoRA {name} weight", "give a weight between -10 and 10, usually 1");
        return LoraFile.Load(lora.Path);
    }

    /// <summary>A warning per LoRA with modules that match no layer; a LoRA none of whose modules match is refused (it would be silently absent).</summary>
    private static IEnumerable<string> Unmatched(List<LoraFile> files, LoraPatch patch)
    {
        var warnings = new List<string>();
        foreach (var file in files)
        {
            var unmatched = patch.UnmatchedModules.Where(u => ReferenceEquals(u.File, file)).Select(u => $"{u.Module.Target} {u.Module.Name}").ToList();
            if (unmatched.Count == 0) continue;
            if (unmatched.Count == file.Modules.Count)
                throw new UserInputException(file.Path, $"the LoRA matches no layer of the model (first module: {unmatched[0]}); it was made for another architecture",
                    "choose a LoRA trained for this model's family");
            warnings.Add($"LoRA {file.Name}: {unmatched.Count} of {file.Modules.Count} modules match no layer of the model and were left out (first: {unmatched[0]})");
        }
        return warnings;
    }

    /// <summary>
    /// The embeddings' tokens baked into each text encoder's table and tokenizer (<see cref="TextualInversionBake"/>):
    /// SDXL's first encoder takes their clip_l vectors, the second their clip_g.
    /// </summary>
    private static void Bake(StableDiffusionModel model, List<TextualInversionEmbedding> embeddings, Dictionary<string, BakedTextualInversion> baked)
    {
        using (var weights = model.TextEncoder.StateDict())
            baked["text_encoder"] = TextualInversionBake.Bake(model.Tokenizer, weights, embeddings, TextualInversionVectors.First);
        if (model.TextEncoder2 is { } encoder2 && model.Tokenizer2 is { } tokenizer2)
            using (var weights = encoder2.StateDict())
                baked["text_encoder_2"] = TextualInversionBake.Bake(tokenizer2, weights, embeddings, TextualInversionVectors.Second);
    }

    /// <summary>The external data file name of a network and whether its weights always go there (diffusers' script always splits the UNet).</summary>
    private static (string Name, bool Force) ExternalData(OnnxLayout layout, string network) => layout switch
    {
        OnnxLayout.Diffusers => (DiffusersExternalData, network == "unet"),
        _ => (OptimumExternalData, false),
    };

    /// <summary>
    /// The submodel's config.json. transformers records the weights' dtype in a text encoder's, which follows the precision,
    /// and its vocabulary size, which grows by the baked-in tokens (as <c>resize_token_embeddings</c> leaves it).
    /// </summary>
    private static JsonObject SubmodelConfig(string json, string component, OnnxPrecision precision, BakedTextualInversion? baked)
    {
        var config = JsonNode.Parse(json)!.AsObject();
        if (component.StartsWith(ModelComponents.TextEncoder, StringComparison.Ordinal))
            config["torch_dtype"] = precision == OnnxPrecision.Float16 ? "float16" : "float32";
        if (baked is not null) config["vocab_size"] = baked.TokenEmbedding.Size(0);
        return config;
    }

    /// <summary>The model's scheduler config, with the class diffusers' pipelines default to where the model names none.</summary>
    private static JsonObject SchedulerConfig(StableDiffusionModel model)
    {
        var config = model.SchedulerConfig.DeepClone().AsObject();
        if (config["_class_name"] is null)
        {
            var named = new JsonObject { ["_class_name"] = "PNDMScheduler", ["_diffusers_version"] = ModelWriter.DiffusersVersion };
            foreach (var (key, value) in config) named[key] = value?.DeepClone();
            config = named;
        }
        return config;
    }

    /// <summary>
    /// model_index.json as each tool's pipeline saves it: the networks as <c>OnnxRuntimeModel</c>s, the tokenizers and
    /// scheduler by class, the absent safety checker and feature extractor as <c>[null, null]</c>. Keys in order, as diffusers writes them.
    /// </summary>
    private static JsonObject ModelIndex(StableDiffusionModel model, OnnxLayout layout, IReadOnlyList<OnnxNetwork> networks, JsonObject scheduler)
    {
        static JsonArray Library(string? library, string? className) => [library, className];
        var className = layout == OnnxLayout.Diffusers ? "OnnxStableDiffusionPipeline"
            : model.IsSdxl ? "ORTStableDiffusionXLPipeline" : "ORTStableDiffusionPipeline";
        var index = new SortedDictionary<string, JsonNode?>(StringComparer.Ordinal)
        {
            ["_class_name"] = className,
            ["_diffusers_version"] = ModelWriter.DiffusersVersion,
            ["feature_extractor"] = Library(null, null),
            ["scheduler"] = Library("diffusers", scheduler["_class_name"]!.GetValue<string>()),
            ["tokenizer"] = Library("transformers", "CLIPTokenizer"),
        };
        foreach (var network in networks) index[network.Folder] = Library("diffusers", "OnnxRuntimeModel");
        if (model.IsSdxl)
        {
            index["force_zeros_for_empty_prompt"] = true;
            index["image_encoder"] = Library(null, null);
            index["tokenizer_2"] = Library("transformers", "CLIPTokenizer");
        }
        else
        {
            index["requires_safety_checker"] = false;
            index["safety_checker"] = Library(null, null);
        }
        return new JsonObject(index.Select(kv => KeyValuePair.Create(kv.Key, kv.Value)));
    }

    private static readonly JsonSerializerOptions IndentedJson = new() { WriteIndented = true };

    private static void WriteJson(string path, JsonNode json) => File.WriteAllText(path, json.ToJsonString(IndentedJson) + "\n");
}
