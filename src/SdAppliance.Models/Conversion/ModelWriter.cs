using System.Text.Json;
using System.Text.Json.Nodes;
using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;

namespace SdAppliance.Models.Conversion;

/// <summary>
/// One tensor of a model to be written: its place (component and name), dtype, shape, and a function
/// that makes its row-major bytes when the writer reaches it, so a model is written one tensor at a time.
/// </summary>
public sealed record ModelTensor(TensorKey Key, SafetensorsDType DType, IReadOnlyList<long> Shape, Func<byte[]> Bytes);

/// <summary>What a diffusers folder is written from.</summary>
/// <param name="Tensors">Every weight, keyed by component (<see cref="ModelComponents"/>); a text_encoder_2 makes it SDXL, the SDXL refiner without a text_encoder.</param>
/// <param name="ComponentConfigs">Each component's config.json text, written as it is except a text encoder's
/// <c>torch_dtype</c>, which follows its weights.</param>
/// <param name="SchedulerConfig">scheduler/scheduler_config.json; its <c>_class_name</c> goes into model_index.json.</param>
/// <param name="TokenizerFolders">Folders to copy as <c>tokenizer</c>/<c>tokenizer_2</c>; one left out is recorded as absent.</param>
/// <param name="Family">The model family (SD 2.x's tokenizer gets OpenCLIP's pad token).</param>
public sealed record DiffusersFolderContent(
    IReadOnlyList<ModelTensor> Tensors,
    IReadOnlyDictionary<string, string> ComponentConfigs,
    JsonObject SchedulerConfig,
    IReadOnlyDictionary<string, string> TokenizerFolders,
    ModelFamily Family);

/// <summary>
/// The one writer of each model layout, used by the converter (tensors read from files) and by
/// training's exports (tensors of a model in memory): a single original-layout file
/// (<c>.safetensors</c> or <c>.ckpt</c>) or a diffusers folder, each written atomically.
/// </summary>
public static class ModelWriter
{
    /// <summary>The diffusers release whose layout the files follow, written when the UNet's config does not name one.</summary>
    public const string DiffusersVersion = "0.30.0";

    private static readonly string[] BaseComponents = [ModelComponents.Unet, ModelComponents.Vae, ModelComponents.TextEncoder];

    private static readonly JsonSerializerOptions IndentedJson = new() { WriteIndented = true };

    /// <summary>
    /// The target tensors of <paramref name="mapping"/>, each made from <paramref name="sources"/> (its
    /// source layout, all of them present) by <see cref="KeyMapping.Materialize"/> when it is written.
    /// </summary>
    public static IReadOnlyList<ModelTensor> Remap(KeyMapping mapping, IEnumerable<ModelTensor> sources)
    {
        ArgumentNullException.ThrowIfNull(mapping);
        ArgumentNullException.ThrowIfNull(sources);
        var byKey = sources.ToDictionary(t => t.Key);
        return [.. mapping.Tensors.Select(r => new ModelTensor(r.Target, byKey[r.Sources[0]].DType, r.Shape,
            () => KeyMapping.Materialize(r, key => (byKey[key].DType, byKey[key].Bytes())).Bytes))];
    }

    /// <summary>
    /// Writes single-file tensors as <c>.safetensors</c> (<see cref="ModelFormat.Safetensors"/>, no metadata,
    /// as diffusers' conversion script writes it) or as an A1111 <c>.ckpt</c> (<see cref="ModelFormat.Ckpt"/>).
    /// </summary>
    public static void WriteSingleFile(string path, ModelFormat format, IEnumerable<ModelTensor> tensors)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(tensors);
        switch (format)
        {
            case ModelFormat.Safetensors:
                SafetensorsFile.Write(path, tensors.Select(Writable));
                break;
            case ModelFormat.Ckpt:
                TorchCheckpointWriter.Write(path, [.. tensors.Select(Writable)]);
                break;
            default:
                throw new ArgumentException($"{format} is not a single-file format", nameof(format));
        }
    }

    /// <summary>
    /// Writes a diffusers folder at <paramref name="path"/> (replacing one there as a whole, see
    /// <see cref="AtomicFile.WriteFolder"/>): each component's config.json and weights, the scheduler
    /// config, the tokenizers and model_index.json.
    /// </summary>
    /// <exception cref="ArgumentException">A component without weights or without a config.</exception>
    public static void WriteDiffusersFolder(string path, DiffusersFolderContent content)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(content);
        var components = DiffusersComponents(content.Tensors);
        foreach (var component in components)
        {
            if (content.Tensors.All(t => t.Key.Component != component))
                throw new ArgumentException($"the model has no {component} weights; a diffusers folder needs every component", nameof(content));
            if (!content.ComponentConfigs.ContainsKey(component))
                throw new ArgumentException($"no config.json was given for {component}", nameof(content));
        }
        var full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(Path.TrimEndingDirectorySeparator(full))!);
        AtomicFile.WriteFolder(full, temp =>
        {
            foreach (var component in components)
            {
                var folder = Directory.CreateDirectory(Path.Combine(temp, component)).FullName;
                var tensors = content.Tensors.Where(t => t.Key.Component == component).ToList();
                WriteComponentConfig(component, content.ComponentConfigs[component], folder, tensors);
                var weights = component.StartsWith(ModelComponents.TextEncoder, StringComparison.Ordinal) ? "model.safetensors" : "diffusion_pytorch_model.safetensors";
                // save_pretrained's metadata.
                SafetensorsFile.Write(Path.Combine(folder, weights), tensors.Select(Writable), new Dictionary<string, string> { ["format"] = "pt" });
            }
            var scheduler = Directory.CreateDirectory(Path.Combine(temp, "scheduler")).FullName;
            WriteJson(Path.Combine(scheduler, "scheduler_config.json"), content.SchedulerConfig);
            foreach (var (sub, from) in content.TokenizerFolders)
            {
                var to = Directory.CreateDirectory(Path.Combine(temp, sub)).FullName;
                foreach (var file in Directory.EnumerateFiles(from))
                    File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
                // OpenCLIP (SD 2.x, SDXL's second encoder) pads with "!": say so where diffusers looks, since a shared CLIP folder may not.
                if (sub == "tokenizer_2" || content.Family == ModelFamily.V2)
                    EnsurePadToken(to, "!");
            }
            WriteModelIndex(temp, content, components);
        });
    }

    /// <summary>
    /// The components a diffusers folder of <paramref name="tensors"/> has: SDXL's when one is a second text encoder's, the
    /// refiner's (unet, vae, text_encoder_2) when no tensor is the first text encoder's.
    /// </summary>
    internal static IReadOnlyList<string> DiffusersComponents(IEnumerable<ModelTensor> tensors)
    {
        var present = tensors.Select(t => t.Key.Component).ToHashSet(StringComparer.Ordinal);
        if (!present.Contains(ModelComponents.TextEncoder2)) return BaseComponents;
        return present.Contains(ModelComponents.TextEncoder) ? [.. BaseComponents, ModelComponents.TextEncoder2] : [ModelComponents.Unet, ModelComponents.Vae, ModelComponents.TextEncoder2];
    }

    private static SafetensorsTensor Writable(ModelTensor t) => new(t.Key.Name, t.DType, t.Shape, stream => stream.Write(t.Bytes()));

    private static void WriteComponentConfig(string component, string json, string folder, List<ModelTensor> tensors)
    {
        var target = Path.Combine(folder, "config.json");
        if (!component.StartsWith(ModelComponents.TextEncoder, StringComparison.Ordinal))
        {
            File.WriteAllText(target, json);
            return;
        }
        // transformers records the weights' dtype in the config; it changes with --half.
        var config = JsonNode.Parse(json)!.AsObject();
        var dtype = tensors.Select(t => t.DType).FirstOrDefault(d => d is SafetensorsDType.F16 or SafetensorsDType.BF16 or SafetensorsDType.F32);
        config["torch_dtype"] = dtype switch { SafetensorsDType.F16 => "float16", SafetensorsDType.BF16 => "bfloat16", _ => "float32" };
        WriteJson(target, config);
    }

    private static void WriteJson(string path, JsonNode json) => File.WriteAllText(path, json.ToJsonString(IndentedJson) + "\n");

    private static void EnsurePadToken(string folder, string pad)
    {
        var file = Path.Combine(folder, "special_tokens_map.json");
        var map = File.Exists(file) ? JsonFiles.ReadObject(file) : [];
        var current = map["pad_token"] switch
        {
            JsonValue v when v.TryGetValue<string>(out var s) => s,
            JsonObject o => o["content"]?.GetValue<string>(),
            _ => null,
        };
        if (current == pad) return;
        map["pad_token"] = pad;
        WriteJson(file, map);
    }

    private static void WriteModelIndex(string temp, DiffusersFolderContent content, IReadOnlyList<string> components)
    {
        var isSdxl = components.Contains(ModelComponents.TextEncoder2);
        var isRefiner = isSdxl && !components.Contains(ModelComponents.TextEncoder);
        static JsonArray Library(string? library, string? className) => [library, className];
        JsonArray Tokenizer(string name) => content.TokenizerFolders.ContainsKey(name) ? Library("transformers", "CLIPTokenizer") : Library(null, null);
        var version = JsonNode.Parse(content.ComponentConfigs[ModelComponents.Unet])?["_diffusers_version"] is JsonValue v && v.TryGetValue<string>(out var s) ? s : DiffusersVersion;
        var schedulerClass = content.SchedulerConfig["_class_name"]?.GetValue<string>() ?? "PNDMScheduler";
        var index = new SortedDictionary<string, JsonNode?>(StringComparer.Ordinal)
        {
            ["_class_name"] = isRefiner ? "StableDiffusionXLImg2ImgPipeline" : isSdxl ? "StableDiffusionXLPipeline" : "StableDiffusionPipeline",
            ["_diffusers_version"] = version,
            ["feature_extractor"] = Library(null, null),
            ["image_encoder"] = Library(null, null),
            ["scheduler"] = Library("diffusers", schedulerClass),
            ["text_encoder"] = isRefiner ? Library(null, null) : Library("transformers", "CLIPTextModel"),
            ["tokenizer"] = Tokenizer("tokenizer"),
            ["unet"] = Library("diffusers", "UNet2DConditionModel"),
            ["vae"] = Library("diffusers", "AutoencoderKL"),
        };
        if (isSdxl)
        {
            // The refiner's model_index: it encodes an empty negative prompt and conditions on an aesthetic score.
            index["force_zeros_for_empty_prompt"] = !isRefiner;
            if (isRefiner) index["requires_aesthetics_score"] = true;
            index["text_encoder_2"] = Library("transformers", "CLIPTextModelWithProjection");
            index["tokenizer_2"] = Tokenizer("tokenizer_2");
        }
        else
        {
            index["requires_safety_checker"] = false;
            index["safety_checker"] = Library(null, null);
        }
        WriteJson(Path.Combine(temp, "model_index.json"), new JsonObject(index.Select(kv => KeyValuePair.Create(kv.Key, kv.Value))));
    }
}
