using System.Text.Json.Nodes;
using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Tokenization;
using SdAppliance.Models.Unet;
using SdAppliance.Models.Vae;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using SdAppliance.Torch.Serialization;

namespace SdAppliance.Models.Loading;

/// <param name="ConfigDirectory">A diffusers model folder whose <c>*/config.json</c> and <c>scheduler/</c>
/// describe the architecture of a single file that is not a standard family (diffusers' <c>from_single_file(config=...)</c>).</param>
/// <param name="PredictionType"><c>epsilon</c> or <c>v_prediction</c>, overriding what the model says or what is detected.</param>
/// <param name="SearchRoots">Folders holding <c>models/configs/</c> and <c>models/tokenizers/</c> (the repository, the data folder).</param>
/// <param name="Vae">A VAE used in place of the model's own (kohya's <c>--vae</c>, A1111's <c>sd_vae</c>): a diffusers VAE
/// folder or a single VAE file in the original or diffusers layout (see <see cref="SeparateVae"/>). Its weights fill the
/// model's VAE architecture, so one whose shapes differ is refused naming the file and the tensor.</param>
public sealed record ModelLoadOptions(
    string? ConfigDirectory = null,
    string? PredictionType = null,
    Device? Device = null,
    DType DType = DType.Float32,
    IReadOnlyList<string>? SearchRoots = null,
    string? Vae = null);

/// <summary>A model's family and prediction type (null when only running the model tells), from <see cref="ModelLoader.Describe"/>.</summary>
public sealed record ModelDescription(ModelFamily Family, string? PredictionType);

/// <summary>
/// Loads Stable Diffusion 1.x, 2.x and SDXL from a diffusers folder (fp32/fp16, <c>.safetensors</c> or
/// <c>.bin</c>) or a single original-layout file (<c>.safetensors</c>, <c>.ckpt</c>), detecting the family
/// from the key set and shapes and ignoring EMA and training-only keys.
/// </summary>
public static class ModelLoader
{
    /// <param name="cancellationToken">Checked between components and between tensors: a cancelled load frees what it built and throws <see cref="OperationCanceledException"/>.</param>
    public static StableDiffusionModel Load(string path, ModelLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new ModelLoadOptions();
        Check(path, options);
        cancellationToken.ThrowIfCancellationRequested();
        return Directory.Exists(path) ? LoadDiffusersFolder(path, options, cancellationToken) : LoadSingleFile(path, options, cancellationToken);
    }

    /// <summary>
    /// Refuses what can be told without reading the model (a front end calls it before slower work): a model path that is
    /// not there, a config folder that is not a folder, a prediction type or a device that cannot be used.
    /// </summary>
    public static void Check(string path, ModelLoadOptions options)
    {
        if (!Directory.Exists(path) && !File.Exists(path))
            throw new UserInputException(path, "the model does not exist", "give a diffusers folder, with model_index.json, or a .safetensors/.ckpt file");
        if (options.ConfigDirectory is { } configs && !Directory.Exists(configs))
            throw new UserInputException("config_directory", $"'{configs}' is not a folder", "give a diffusers model folder, with unet/config.json...");
        if (options.PredictionType is { } prediction && !PredictionTypes.Contains(prediction))
            throw new UserInputException("prediction_type", $"'{prediction}' is not one of {string.Join(", ", PredictionTypes)}");
        if (options.Vae is { } vae && !Directory.Exists(vae) && !File.Exists(vae))
            throw new UserInputException("vae", $"'{vae}' does not exist", "give a VAE file (.safetensors, .pt, .ckpt) or a diffusers VAE folder (config.json + diffusion_pytorch_model.safetensors)");
        if (options.Device is { IsCuda: true } device && !Cuda.IsAvailable)
            throw new UserInputException("device", $"{device}: CUDA is not available here", "use cpu");
    }

    /// <summary>
    /// What <see cref="Load"/> would find without building the model: the family, from the key set and shapes of a single
    /// file or the components of a folder, and the prediction type where the files tell it (given, a diffusers scheduler, an
    /// A1111 <c>.yaml</c> beside the file). Null prediction: an SD 2.x single file without its <c>.yaml</c>, which only
    /// running its UNet tells (<see cref="VParameterization"/>, done at load). It reads headers and configs, not weights.
    /// </summary>
    public static ModelDescription Describe(string path, ModelLoadOptions? options = null)
    {
        options ??= new ModelLoadOptions();
        Check(path, options);
        if (Directory.Exists(path))
        {
            if (!File.Exists(Path.Combine(path, "unet", "config.json")))
                throw new UserInputException(path, "is not a diffusers model folder: it has no unet/config.json");
            var family = FolderFamily(path, options.ConfigDirectory ?? path);
            var scheduler = Path.Combine(options.ConfigDirectory ?? path, "scheduler", "scheduler_config.json");
            var prediction = options.PredictionType
                ?? (File.Exists(scheduler) ? ReadSchedulerConfig(scheduler)["prediction_type"]?.GetValue<string>() : null)
                ?? "epsilon";
            return new ModelDescription(family, prediction);
        }
        using var source = TensorFile.Open(path);
        var detected = LdmKeyMap.DetectFamily(source.Shapes);
        if (detected == ModelFamily.Unknown)
            throw new UserInputException(path,
                "is not a Stable Diffusion 1.x, 2.x or SDXL checkpoint in the original layout (no model.diffusion_model./first_stage_model. keys of a known family)");
        return new ModelDescription(detected,
            options.PredictionType ?? CompanionYamlPrediction(path) ?? (detected == ModelFamily.V2 ? null : "epsilon"));
    }

    /// <summary>A folder's family: SDXL when it has a second text encoder, else its text encoder tells SD 2.x (OpenCLIP, gelu) from SD 1.x (CLIP, quick_gelu).</summary>
    public static ModelFamily FolderFamily(bool isSdxl, ClipTextConfig textEncoder) =>
        isSdxl ? ModelFamily.XlBase : textEncoder.HiddenAct == "gelu" ? ModelFamily.V2 : ModelFamily.V1;

    /// <summary>
    /// The family of the diffusers folder <paramref name="folder"/> (its configs in <paramref name="configs"/>): the SDXL
    /// refiner when text_encoder_2 is its only text encoder (its model_index has <c>text_encoder: [null, null]</c>), else
    /// as <see cref="FolderFamily(bool, ClipTextConfig)"/>.
    /// </summary>
    public static ModelFamily FolderFamily(string folder, string configs)
    {
        var isSdxl = Directory.Exists(Path.Combine(folder, ModelComponents.TextEncoder2));
        if (isSdxl && !Directory.Exists(Path.Combine(folder, ModelComponents.TextEncoder))) return ModelFamily.XlRefiner;
        return FolderFamily(isSdxl, ClipTextConfig.Load(ConfigFile(configs, ModelComponents.TextEncoder)));
    }

    /// <summary>The folder under models/configs that describes a family.</summary>
    public static string ConfigFolderName(ModelFamily family) => family switch
    {
        ModelFamily.V1 => "sd15",
        ModelFamily.V2 => "sd21v",
        ModelFamily.XlBase => "sdxl_base",
        ModelFamily.XlRefiner => "sdxl_refiner",
        _ => throw new ArgumentOutOfRangeException(nameof(family), family, "no standard configs for this family"),
    };

    // ---- diffusers folders ----
    private static StableDiffusionModel LoadDiffusersFolder(string folder, ModelLoadOptions options, CancellationToken cancellationToken)
    {
        if (!File.Exists(Path.Combine(folder, "unet", "config.json")))
            throw new UserInputException(folder, "is not a diffusers model folder: it has no unet/config.json (expected model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)");
        var configs = options.ConfigDirectory ?? folder;
        var family = Directory.Exists(Path.Combine(folder, ModelComponents.TextEncoder2))
            ? Directory.Exists(Path.Combine(folder, ModelComponents.TextEncoder)) ? ModelFamily.XlBase : ModelFamily.XlRefiner
            : ModelFamily.Unknown;
        var parts = new ComponentWeights();
        try
        {
            foreach (var component in Components(family))
            {
                var file = WeightsFile(Path.Combine(folder, component));
                var source = parts.Open(component, file);
                parts.Set(component, source.Shapes.Keys.ToDictionary(k => k, k => (Func<Tensor>)(() => source.ReadTensor(k))));
            }
            UseSeparateVae(parts, options);
            return Build(folder, family, configs, parts, options, folder, cancellationToken);
        }
        finally
        {
            parts.Dispose();
        }
    }

    private static IEnumerable<string> Components(ModelFamily family) => family switch
    {
        ModelFamily.XlBase => [ModelComponents.Unet, ModelComponents.Vae, ModelComponents.TextEncoder, ModelComponents.TextEncoder2],
        ModelFamily.XlRefiner => [ModelComponents.Unet, ModelComponents.Vae, ModelComponents.TextEncoder2],
        _ => [ModelComponents.Unet, ModelComponents.Vae, ModelComponents.TextEncoder],
    };

    /// <summary>A component's weights: fp32 safetensors first, then the fp16 variant, then the pickle .bin.</summary>
    internal static string WeightsFile(string componentFolder)
    {
        string[] names = ["diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
            "model.fp16.safetensors", "diffusion_pytorch_model.bin", "pytorch_model.bin", "diffusion_pytorch_model.fp16.bin", "pytorch_model.fp16.bin"];
        foreach (var name in names)
        {
            var file = Path.Combine(componentFolder, name);
            if (File.Exists(file)) return file;
        }
        throw new UserInputException(componentFolder, $"has no weights: expected one of {string.Join(", ", names)}");
    }

    // ---- single files ----
    private static StableDiffusionModel LoadSingleFile(string file, ModelLoadOptions options, CancellationToken cancellationToken)
    {
        using var source = TensorFile.Open(file);
        var mapping = LdmKeyMap.ToDiffusers(source.Shapes);
        if (mapping.Family == ModelFamily.Unknown)
            throw new UserInputException(file,
                "is not a Stable Diffusion 1.x, 2.x or SDXL checkpoint in the original layout (no model.diffusion_model./first_stage_model. keys of a known family)",
                "pass config_directory, a diffusers folder describing its architecture, or convert it to a diffusers folder");
        var configs = options.ConfigDirectory ?? FindConfigs(mapping.Family, options);
        var parts = new ComponentWeights();
        try
        {
            foreach (var component in Components(mapping.Family))
                parts.Set(component, mapping.Component(component).ToDictionary(r => r.Target.Name, r => (Func<Tensor>)(() => Materialize(source, r))));
            UseSeparateVae(parts, options);
            // Given configs describe the file; the family's standard ones describe its base model, not a distilled one.
            var unetConfig = options.ConfigDirectory is null
                ? UnetConfigInference.FitDepths(DiffusersConfig.Load<UNet2DConditionConfig>(ConfigFile(configs, ModelComponents.Unet)),
                    [.. mapping.Component(ModelComponents.Unet).Select(r => r.Target.Name)], file)
                : null;
            return Build(file, mapping.Family, configs, parts, options, file, cancellationToken, unetConfig);
        }
        finally
        {
            parts.Dispose();
        }
    }

    /// <summary>The VAE's weights from <see cref="ModelLoadOptions.Vae"/>, in place of the model's, when one is given.</summary>
    private static void UseSeparateVae(ComponentWeights parts, ModelLoadOptions options)
    {
        if (options.Vae is not { } path) return;
        var vae = SeparateVae.Open(path, file => parts.Open(ModelComponents.Vae, file));
        parts.Set(ModelComponents.Vae, vae.Tensors, vae.WeightsFile, vae.FileNames);
    }

    private static Tensor Materialize(TensorFile source, TensorRecipe recipe)
    {
        if (recipe.Op == TensorOp.Copy) return source.ReadTensor(recipe.Sources[0].Name);
        var (dtype, bytes) = KeyMapping.Materialize(recipe, key => (source.DTypeOf(key.Name), source.ReadBytes(key.Name)));
        return torch.FromBytes(bytes, recipe.Shape.ToArray(), Torch.Serialization.TensorFiles.ToTorch(dtype, recipe.Target.Name, source.Path));
    }

    internal static string FindConfigs(ModelFamily family, ModelLoadOptions options)
    {
        var name = ConfigFolderName(family);
        var candidates = SearchRoots(options).Select(root => Path.Combine(root, "models", "configs", name)).ToList();
        return candidates.FirstOrDefault(c => File.Exists(Path.Combine(c, "unet", "config.json")))
            ?? throw new UserInputException(null, $"the architecture configs for {family} are missing: expected {string.Join(" or ", candidates)} (models/configs/{name} of the SdAppliance repository)",
                "pass config_directory, a diffusers folder with the model's configs");
    }

    /// <summary>The repository or install folder (holding models/), found upwards from the program, plus the caller's roots.</summary>
    public static IReadOnlyList<string> SearchRoots(ModelLoadOptions options)
    {
        var roots = new List<string>(options.SearchRoots ?? []);
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (Directory.Exists(Path.Combine(dir.FullName, "models", "configs")))
            {
                roots.Add(dir.FullName);
                break;
            }
        return roots;
    }

    // ---- building ----
    /// <param name="unetConfig">The UNet's config when it is not <paramref name="configs"/>' own (inferred for a single file).</param>
    private static StableDiffusionModel Build(string sourcePath, ModelFamily family, string configs, ComponentWeights weights, ModelLoadOptions options, string modelPath,
        CancellationToken cancellationToken, UNet2DConditionConfig? unetConfig = null)
    {
        var device = options.Device ?? Device.Cpu;
        var moduleOptions = new ModuleOptions(device, options.DType);
        var isSdxl = weights.Has(ModelComponents.TextEncoder2);
        var hasFirstEncoder = weights.Has(ModelComponents.TextEncoder);
        UNet2DConditionModel? unet = null;
        AutoencoderKL? vae = null;
        ClipTextModel? te = null, te2 = null;
        // Every config is read and checked before the first module is allocated.
        unetConfig ??= DiffusersConfig.Load<UNet2DConditionConfig>(ConfigFile(configs, "unet"));
        var vaeConfig = DiffusersConfig.Load<AutoencoderKLConfig>(ConfigFile(configs, "vae"));
        var teConfig = hasFirstEncoder ? ClipTextConfig.Load(ConfigFile(configs, "text_encoder")) : null;
        var te2Config = isSdxl ? ClipTextConfig.Load(ConfigFile(configs, "text_encoder_2")) : null;
        if (te2Config is not null) CheckTimeIdWidth(configs, unetConfig, te2Config, requiresAestheticsScore: !hasFirstEncoder);
        try
        {
            using (Init.Skip())
            {
                unet = new UNet2DConditionModel(unetConfig, moduleOptions);
                vae = new AutoencoderKL(vaeConfig, moduleOptions);
                if (teConfig is not null) te = new ClipTextModel(teConfig, withProjection: false, device, options.DType);
                if (te2Config is not null) te2 = new ClipTextModel(te2Config, withProjection: true, device, options.DType);
            }
            Fill(unet, weights, ModelComponents.Unet, sourcePath, configs, cancellationToken);
            Fill(vae, weights, ModelComponents.Vae, sourcePath, configs, cancellationToken);
            if (te is not null) Fill(te, weights, ModelComponents.TextEncoder, sourcePath, configs, cancellationToken);
            if (te2 is not null) Fill(te2, weights, ModelComponents.TextEncoder2, sourcePath, configs, cancellationToken);
            if (family == ModelFamily.Unknown)
                family = FolderFamily(isSdxl, teConfig!);
            unet.Eval();
            vae.Eval();
            te?.Eval();
            te2?.Eval();

            var (tokenizer, tokenizer2) = LoadTokenizers(modelPath, family, options);

            var scheduler = SchedulerConfig(configs, sourcePath, options, unet, family);
            // The refiner's one tokenizer and encoder are its second ones: the model's first.
            var vaePath = options.Vae is { } separate ? Path.GetFullPath(separate) : null;
            return te is null
                ? new StableDiffusionModel(sourcePath, family, tokenizer, te2!, null, null, unet, vae, scheduler, device, options.DType) { VaePath = vaePath }
                : new StableDiffusionModel(sourcePath, family, tokenizer, te, tokenizer2, te2, unet, vae, scheduler, device, options.DType) { VaePath = vaePath };
        }
        catch
        {
            unet?.Dispose();
            vae?.Dispose();
            te?.Dispose();
            te2?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// diffusers' check of <c>_get_add_time_ids</c>, made before any weight is read: the UNet's added embedding takes the pooled
    /// text embedding and 6 time ids (the base: original size, crop, target size) or 5 (<c>requires_aesthetics_score</c>, the
    /// refiner: original size, crop, aesthetic score), each <c>addition_time_embed_dim</c> wide.
    /// </summary>
    private static void CheckTimeIdWidth(string configs, UNet2DConditionConfig unet, ClipTextConfig textEncoder2, bool requiresAestheticsScore)
    {
        if (unet.AdditionEmbedType != "text_time") return;
        var timeIds = requiresAestheticsScore ? 5 : 6;
        var expected = timeIds * unet.AdditionTimeEmbedDim!.Value + textEncoder2.ProjectionDim;
        if (unet.ProjectionClassEmbeddingsInputDim == expected) return;
        var other = requiresAestheticsScore ? 6 : 5;
        var fits = unet.ProjectionClassEmbeddingsInputDim == other * unet.AdditionTimeEmbedDim!.Value + textEncoder2.ProjectionDim;
        throw new ModelConfigException(ConfigFile(configs, ModelComponents.Unet), "projection_class_embeddings_input_dim",
            $"is {unet.ProjectionClassEmbeddingsInputDim}, but a model {(requiresAestheticsScore ? "with text_encoder_2 alone (the SDXL refiner, requires_aesthetics_score)" : "with two text encoders (the SDXL base)")} " +
            $"passes {timeIds} time ids × addition_time_embed_dim {unet.AdditionTimeEmbedDim} + the pooled {textEncoder2.ProjectionDim} = {expected}" +
            (fits ? $"; {unet.ProjectionClassEmbeddingsInputDim} is what {other} time ids make, the {(requiresAestheticsScore ? "base's" : "refiner's")} UNet: the folder mixes the base's and the refiner's parts" : ""));
    }

    /// <summary>
    /// The tokenizer (and SDXL's second) of a model of <paramref name="family"/> at <paramref name="modelPath"/>, found as
    /// <see cref="FindTokenizer"/> says, padded as the family pads; an ONNX export's folder reads them the same way.
    /// </summary>
    public static (ClipTokenizer Tokenizer, ClipTokenizer? Tokenizer2) LoadTokenizers(string modelPath, ModelFamily family, ModelLoadOptions options)
    {
        var roots = SearchRoots(options);
        // SD 1.x pads with <|endoftext|>; OpenCLIP (SD 2.x, SDXL's second encoder) pads with "!" (id 0).
        var openClipPad = new ClipTokenizerOptions(PadToken: "!");
        // The refiner's one tokenizer is its tokenizer_2.
        var tokenizer = ClipTokenizer.FromFolder(FindTokenizer(modelPath, options, roots, family == ModelFamily.XlRefiner ? "tokenizer_2" : "tokenizer"),
            family is ModelFamily.V2 or ModelFamily.XlRefiner ? openClipPad : null);
        var tokenizer2 = family == ModelFamily.XlBase ? ClipTokenizer.FromFolder(FindTokenizer(modelPath, options, roots, "tokenizer_2"), openClipPad) : null;
        return (tokenizer, tokenizer2);
    }

    /// <summary>
    /// The tokenizer folder: beside the model, else in the <see cref="ModelLoadOptions.ConfigDirectory"/> (a single file
    /// given <c>--config</c> takes that model's tokenizer, as diffusers' <c>from_single_file(config=...)</c> does), else shared.
    /// </summary>
    internal static string FindTokenizer(string modelPath, ModelLoadOptions options, IEnumerable<string> roots, string subfolder)
    {
        var modelFolder = Directory.Exists(modelPath) ? modelPath : Path.GetDirectoryName(Path.GetFullPath(modelPath)) ?? ".";
        static bool Has(string folder) => TokenizerLocator.RequiredFiles.All(f => File.Exists(Path.Combine(folder, f)));
        var home = options.ConfigDirectory is { } configs && !Has(Path.Combine(modelFolder, subfolder)) && Has(Path.Combine(configs, subfolder))
            ? configs : modelPath;
        return TokenizerLocator.Find(home, "clip", roots, subfolder);
    }

    /// <summary>The config.json of <paramref name="component"/> in the diffusers-style folder <paramref name="configs"/>; it must exist.</summary>
    internal static string ConfigFile(string configs, string component)
    {
        var file = Path.Combine(configs, component, "config.json");
        return File.Exists(file) ? file : throw new UserInputException(file, "the architecture config is missing");
    }

    // Old transformers wrote this buffer into text encoder checkpoints; the model does not have it.
    private static readonly string[] IgnoredKeys = ["text_model.embeddings.position_ids"];

    private static void Fill(Module module, ComponentWeights weights, string component, string sourcePath, string configs, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var expected = module.StateDict();
        var given = weights.Get(component);
        // A separate VAE is its own file, with its own names; what does not fit is its fault, not the configs'.
        var separate = weights.SourceOf(component);
        var fix = separate is null ? "pass config_directory, a diffusers folder with the model's own configs" : "give a VAE made for this model's family (the same latent channels and widths)";
        sourcePath = separate ?? sourcePath;
        string InFile(string name) => weights.FileNameOf(component, name) is { } inFile && inFile != name ? $"{inFile} ({name})" : name;
        var dict = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var (name, load) in given)
            {
                cancellationToken.ThrowIfCancellationRequested();
                if (!IgnoredKeys.Contains(name)) dict[name] = load();
            }
            foreach (var (name, tensor) in dict)
                WeightChecks.RequireFinite(sourcePath, $"{component} {name}", tensor);
            foreach (var (name, tensor) in dict)
                if (expected.TryGetValue(name, out var target) && !target.Shape.SequenceEqual(tensor.Shape))
                    throw new UserInputException(sourcePath,
                        $"does not fit the {component} architecture of '{configs}': {InFile(name)} is [{string.Join(", ", tensor.Shape)}] in the file, [{string.Join(", ", target.Shape)}] in the model",
                        fix);
            try
            {
                module.LoadStateDict(dict, strict: true);
            }
            catch (StateDictException e)
            {
                throw new UserInputException(sourcePath, $"does not fit the {component} architecture of '{configs}': {e.Message}", separate is null ? null : fix, inner: e);
            }
        }
        finally
        {
            foreach (var t in dict.Values) t.Dispose();
            expected.Dispose();
        }
    }

    private static JsonObject SchedulerConfig(string configs, string sourcePath, ModelLoadOptions options, UNet2DConditionModel unet, ModelFamily family)
    {
        var prediction = options.PredictionType
            ?? CompanionYamlPrediction(sourcePath)
            ?? (family == ModelFamily.V2 && options.ConfigDirectory is null && File.Exists(sourcePath) ? VParameterization.Detect(unet) : null);
        return FolderSchedulerConfig(configs, prediction);
    }

    /// <summary>
    /// <paramref name="folder"/>'s <c>scheduler/scheduler_config.json</c> (PNDM's SD defaults when it has none) with
    /// <paramref name="predictionType"/>, when given, in place of its own.
    /// </summary>
    public static JsonObject FolderSchedulerConfig(string folder, string? predictionType)
    {
        if (predictionType is not null && !PredictionTypes.Contains(predictionType))
            throw new UserInputException("prediction_type", $"'{predictionType}' is not one of {string.Join(", ", PredictionTypes)}");
        var file = Path.Combine(folder, "scheduler", "scheduler_config.json");
        var config = File.Exists(file) ? ReadSchedulerConfig(file) : DefaultScheduler();
        if (predictionType is not null) config["prediction_type"] = predictionType;
        return config;
    }

    private static JsonObject ReadSchedulerConfig(string file)
    {
        try
        {
            return JsonNode.Parse(DiffusersConfig.ReadText(file)) as JsonObject ?? throw new ModelConfigException(file, null, "is not a JSON object");
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new ModelConfigException(file, null, $"cannot be read: {e.Message}", e);
        }
    }
    /// <summary>What a diffusers scheduler's <c>prediction_type</c> may be.</summary>
    public static readonly IReadOnlyList<string> PredictionTypes = ["epsilon", "v_prediction", "sample"];

    internal static JsonObject DefaultScheduler() => new()
    {
        ["_class_name"] = "PNDMScheduler", ["beta_start"] = 0.00085, ["beta_end"] = 0.012, ["beta_schedule"] = "scaled_linear",
        ["num_train_timesteps"] = 1000, ["prediction_type"] = "epsilon", ["set_alpha_to_one"] = false, ["skip_prk_steps"] = true,
        ["steps_offset"] = 1, ["clip_sample"] = false, ["timestep_spacing"] = "leading",
    };

    /// <summary>A1111's convention: <c>model.yaml</c> next to <c>model.safetensors</c>, with <c>parameterization: "v"</c> for v-prediction.</summary>
    internal static string? CompanionYamlPrediction(string sourcePath)
    {
        if (!File.Exists(sourcePath)) return null;
        var yaml = Path.ChangeExtension(sourcePath, ".yaml");
        if (!File.Exists(yaml)) return null;
        var text = File.ReadAllText(yaml);
        return System.Text.RegularExpressions.Regex.IsMatch(text, @"parameterization:\s*[""']?v[""']?\s*$", System.Text.RegularExpressions.RegexOptions.Multiline)
            ? "v_prediction" : "epsilon";
    }

    /// <summary>Per-component lazily loaded tensors, and the files they come from.</summary>
    private sealed class ComponentWeights : IDisposable
    {
        private readonly Dictionary<string, IReadOnlyDictionary<string, Func<Tensor>>> components = [];
        private readonly Dictionary<string, (string Source, IReadOnlyDictionary<string, string> FileNames)> separate = [];
        private readonly List<TensorFile> sources = [];

        public TensorFile Open(string component, string file)
        {
            var source = TensorFile.Open(file);
            sources.Add(source);
            return source;
        }

        public void Set(string component, IReadOnlyDictionary<string, Func<Tensor>> tensors) => components[component] = tensors;

        /// <summary>A component whose weights come from a file of their own (a separate VAE), with each tensor's name there.</summary>
        public void Set(string component, IReadOnlyDictionary<string, Func<Tensor>> tensors, string source, IReadOnlyDictionary<string, string> fileNames)
        {
            components[component] = tensors;
            separate[component] = (source, fileNames);
        }

        /// <summary>The file of a component given apart from the model; null for the model's own.</summary>
        public string? SourceOf(string component) => separate.TryGetValue(component, out var s) ? s.Source : null;

        public string? FileNameOf(string component, string name) => separate.TryGetValue(component, out var s) ? s.FileNames.GetValueOrDefault(name) : null;

        public bool Has(string component) => components.ContainsKey(component);

        public IReadOnlyDictionary<string, Func<Tensor>> Get(string component) => components[component];

        public void Dispose()
        {
            foreach (var s in sources) s.Dispose();
        }
    }
}
