using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.Loading;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Unet;
using SdAppliance.Models.Vae;

namespace SdAppliance.Models.Conversion;

/// <summary>The layouts a model is converted between.</summary>
public enum ModelFormat
{
    /// <summary>A diffusers folder: model_index.json, unet/, vae/, text_encoder(_2)/, tokenizer(_2)/, scheduler/.</summary>
    Diffusers,

    /// <summary>One original-layout ("ldm") <c>.safetensors</c> file.</summary>
    Safetensors,

    /// <summary>One original-layout torch checkpoint, <c>{"state_dict": ...}</c>, as A1111 reads it.</summary>
    Ckpt,
}

/// <param name="To">The output layout; null takes it from the output's extension (<see cref="ModelConverter.FormatFor"/>).</param>
/// <param name="Half">Store floating-point tensors as float16 (integer buffers stay as they are).</param>
/// <param name="ConfigDirectory">A diffusers folder whose <c>*/config.json</c> and <c>scheduler/</c> describe a single
/// file's architecture, for files that are not a standard family; otherwise models/configs/&lt;family&gt; is used.</param>
/// <param name="PredictionType"><c>epsilon</c> or <c>v_prediction</c> for the written scheduler config.</param>
/// <param name="SearchRoots">Folders holding <c>models/configs/</c> and <c>models/tokenizers/</c> besides the program's own.</param>
/// <param name="Prune">A single file written without its EMA copy (<c>model_ema.*</c>); a .ckpt's optimizer states,
/// global step and other non-weights never travel (only its state dict is read).</param>
/// <param name="EmaOnly">A single file's EMA weights (<see cref="LdmEma"/>) written as its UNet weights, the live ones
/// and the EMA keys left out; refused for a file without EMA weights. Implies <paramref name="Prune"/>.</param>
public sealed record ConversionOptions(
    ModelFormat? To = null,
    bool Half = false,
    string? ConfigDirectory = null,
    string? PredictionType = null,
    IReadOnlyList<string>? SearchRoots = null,
    bool Prune = false,
    bool EmaOnly = false);

/// <param name="Done">Tensors written so far, out of <paramref name="Total"/>.</param>
public sealed record ConversionProgress(int Done, int Total);

/// <param name="Warnings">What the output lacks or assumes (a tokenizer not found, tensors no rule maps...).</param>
public sealed record ConversionResult(string OutputPath, ModelFormat Format, ModelFamily Family, int TensorCount, IReadOnlyList<string> Warnings);

/// <summary>
/// Converts Stable Diffusion models between diffusers folders and single original-layout files
/// (<c>.safetensors</c>, <c>.ckpt</c>) in both directions, as diffusers' conversion scripts do. It is
/// a transformation of names and bytes (<see cref="LdmKeyMap"/>'s recipes, float16 rounding), so no
/// engine is involved; one tensor at a time is held in memory. Output is written by <see cref="ModelWriter"/>
/// (which training's exports share), atomically: files through the writers' temp-and-rename, a folder built
/// beside the target and renamed into place.
/// </summary>
public static class ModelConverter
{
    private static readonly string[] SingleFileExtensions = [".safetensors", ".ckpt", ".pt", ".pth"];

    /// <summary><c>.safetensors</c> -&gt; Safetensors, <c>.ckpt</c>/<c>.pt</c>/<c>.pth</c> -&gt; Ckpt, anything else a diffusers folder.</summary>
    public static ModelFormat FormatFor(string output) => Path.GetExtension(Path.TrimEndingDirectorySeparator(output)).ToLowerInvariant() switch
    {
        ".safetensors" => ModelFormat.Safetensors,
        ".ckpt" or ".pt" or ".pth" => ModelFormat.Ckpt,
        _ => ModelFormat.Diffusers,
    };

    /// <summary>The output formats by name (<c>diffusers</c>, <c>safetensors</c>, <c>ckpt</c>), as front ends and requests spell them.</summary>
    public static IReadOnlyDictionary<string, ModelFormat> FormatNames { get; } = new Dictionary<string, ModelFormat>(StringComparer.Ordinal)
    {
        ["diffusers"] = ModelFormat.Diffusers, ["safetensors"] = ModelFormat.Safetensors, ["ckpt"] = ModelFormat.Ckpt,
    };

    /// <summary>The format named <paramref name="name"/> (null: from the output's extension); <paramref name="field"/> is named when it is none.</summary>
    public static ModelFormat? ParseFormat(string? name, string field) =>
        name is null ? null
        : FormatNames.TryGetValue(name, out var format) ? format
        : throw new UserInputException(field, $"'{name}' is not one of {string.Join(", ", FormatNames.Keys)}");

    public static ConversionResult Convert(string input, string output, ConversionOptions? options = null,
        IProgress<ConversionProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(input);
        ArgumentException.ThrowIfNullOrEmpty(output);
        options ??= new ConversionOptions();
        if (options.PredictionType is not (null or "epsilon" or "v_prediction" or "sample"))
            throw new UserInputException("prediction_type", $"'{options.PredictionType}' is not one of {string.Join(", ", ModelLoader.PredictionTypes)}");
        if (options.ConfigDirectory is not null && !Directory.Exists(options.ConfigDirectory))
            throw new UserInputException("config_directory", $"'{options.ConfigDirectory}' is not a folder", "give a diffusers model folder, with unet/config.json...");
        var format = options.To ?? FormatFor(output);
        CheckPaths(input, output, format);

        using var source = SourceModel.Open(input);
        var warnings = new List<string>();
        var (family, plan) = Plan(source, format, options, warnings);
        if (plan.Count == 0)
            throw new UserInputException(input, "holds no tensors, so there is nothing to convert", "give a model file or a diffusers model folder");
        CheckShapes(source, family, format, options);
        var counter = new Counter(plan.Count, progress, cancellationToken);
        plan = [.. plan.Select(counter.Counted)];
        var full = Path.GetFullPath(output);
        if (format == ModelFormat.Diffusers)
            WriteDiffusers(source, full, family, plan, options, warnings);
        else
            ModelWriter.WriteSingleFile(full, format, plan);
        return new ConversionResult(full, format, family, plan.Count, warnings);
    }

    private static void CheckPaths(string input, string output, ModelFormat format)
    {
        if (!File.Exists(input) && !Directory.Exists(input))
            throw new UserInputException(input, "does not exist", "give a diffusers folder, with model_index.json, or a .safetensors/.ckpt file");
        var fullOutput = Path.TrimEndingDirectorySeparator(Path.GetFullPath(output));
        if (string.Equals(Path.TrimEndingDirectorySeparator(Path.GetFullPath(input)), fullOutput, StringComparison.Ordinal))
            throw new UserInputException(output, "the output is the input", "write the conversion elsewhere");
        var extension = Path.GetExtension(fullOutput).ToLowerInvariant();
        if (format == ModelFormat.Diffusers)
        {
            if (SingleFileExtensions.Contains(extension))
                throw new UserInputException(output, $"is named like a single file ({extension}) but the output is a diffusers folder", "name the folder without that extension");
            if (File.Exists(fullOutput))
                throw new UserInputException(output, "is a file; a diffusers folder cannot replace it");
            if (Directory.Exists(fullOutput) && Directory.EnumerateFileSystemEntries(fullOutput).Any() && !IsDiffusersFolder(fullOutput))
                throw new UserInputException(output, "is a folder that is not a diffusers model; only an empty folder or a model folder is replaced");
        }
        else
        {
            var wanted = format == ModelFormat.Safetensors ? new[] { ".safetensors" } : [".ckpt", ".pt", ".pth"];
            if (!wanted.Contains(extension))
                throw new UserInputException(output, $"a {format.ToString().ToLowerInvariant()} file must be named {string.Join(" or ", wanted)}");
            if (Directory.Exists(fullOutput))
                throw new UserInputException(output, "is a folder; a single file cannot replace it");
        }
        Directory.CreateDirectory(Path.GetDirectoryName(fullOutput)!);
    }

    private static bool IsDiffusersFolder(string folder) =>
        File.Exists(Path.Combine(folder, "model_index.json")) || File.Exists(Path.Combine(folder, "unet", "config.json"));

    // ---- what to write ----
    private static (ModelFamily Family, List<ModelTensor> Plan) Plan(SourceModel source, ModelFormat format, ConversionOptions options, List<string> warnings)
    {
        var toFolder = format == ModelFormat.Diffusers;
        var (singleShapes, tensors) = SourceWeights(source, options, warnings);
        var family = source.IsFolder ? LdmKeyMap.DetectFamily(source.Shapes) : LdmKeyMap.DetectFamily(singleShapes);
        List<ModelTensor> plan;
        if (source.IsFolder == toFolder)
        {
            // Same layout: every tensor as it is (a .ckpt to .safetensors keeps EMA and training keys too, unless pruned).
            plan = tensors;
        }
        else
        {
            if (!source.IsFolder && family == ModelFamily.Unknown)
                throw new UserInputException(source.Path,
                    "is not a Stable Diffusion 1.x, 2.x or SDXL checkpoint in the original layout (no model.diffusion_model./first_stage_model. keys of a known family)");
            var mapping = source.IsFolder ? LdmKeyMap.FromDiffusers(source.Shapes, family) : LdmKeyMap.ToDiffusers(singleShapes, family);
            if (mapping.Unmapped.Count > 0)
                warnings.Add($"{mapping.Unmapped.Count} tensor(s) that no rule maps were left out: " +
                    string.Join(", ", mapping.Unmapped.Take(5)) + (mapping.Unmapped.Count > 5 ? ", ..." : ""));
            plan = [.. ModelWriter.Remap(mapping, tensors)];
        }
        if (options.Half)
            plan = [.. plan.Select(p => IsFloating(p.DType) ? p with { DType = SafetensorsDType.F16, Bytes = () => ToHalf(p.DType, p.Bytes()) } : p)];
        return (family, plan);
    }

    /// <summary>
    /// The source's tensors as the options want them: all of them, or for a single file pruned (no <c>model_ema.*</c>)
    /// or EMA-only (each <c>model.*</c> weight read from its shadow). The shapes are the single file's, of what is kept.
    /// </summary>
    private static (IReadOnlyDictionary<string, long[]> SingleShapes, List<ModelTensor> Tensors) SourceWeights(SourceModel source, ConversionOptions options, List<string> warnings)
    {
        if (source.IsFolder)
        {
            // A diffusers folder carries no EMA copy (diffusers saves the EMA UNet as the unet itself), so pruning has nothing to drop.
            if (options.EmaOnly)
                throw new UserInputException(source.Path, "is a diffusers folder, which has no EMA weights to take (ema_only reads the model_ema.* tensors of a single file)",
                    "convert without ema_only");
            return (new Dictionary<string, long[]>(), [.. source.Tensors]);
        }
        var shapes = source.SingleShapes;
        if (!options.Prune && !options.EmaOnly) return (shapes, [.. source.Tensors]);
        if (options.EmaOnly && !LdmEma.HasEmaWeights(shapes.Keys))
            throw new UserInputException(source.Path, "has no EMA weights (no model_ema.* tensors), so there is nothing for ema_only to take",
                "convert without ema_only (prune drops what a file has of training state)");
        var kept = new List<ModelTensor>();
        var withoutShadow = new List<string>();
        var shadowed = new HashSet<string>(StringComparer.Ordinal);
        foreach (var tensor in source.Tensors)
        {
            var name = tensor.Key.Name;
            if (LdmEma.IsEmaKey(name)) continue;
            if (!options.EmaOnly || LdmEma.ShadowOf(name) is not { } shadow)
            {
                kept.Add(tensor);
                continue;
            }
            if (!shapes.TryGetValue(shadow, out var shadowShape))
            {
                withoutShadow.Add(name);
                kept.Add(tensor);
                continue;
            }
            if (!shadowShape.SequenceEqual(tensor.Shape))
                throw new UserInputException(source.Path,
                    $"the EMA tensor {shadow} is [{string.Join(", ", shadowShape)}] but the weight it shadows, {name}, is [{string.Join(", ", tensor.Shape)}]",
                    "the file's EMA copy does not belong to its model; convert without ema_only");
            shadowed.Add(shadow);
            var shadowKey = new TensorKey(ModelComponents.SingleFile, shadow);
            kept.Add(tensor with { DType = source.DTypeOf(shadowKey), Bytes = () => source.Read(shadowKey) });
        }
        if (withoutShadow.Count > 0)
            warnings.Add($"{withoutShadow.Count} model.* tensor(s) have no EMA copy and keep their live weights: " +
                string.Join(", ", withoutShadow.Take(5)) + (withoutShadow.Count > 5 ? ", ..." : ""));
        var unused = options.EmaOnly ? shapes.Keys.Where(k => LdmEma.IsEmaKey(k) && !LdmEma.Buffers.Contains(k) && !shadowed.Contains(k)).ToList() : [];
        if (unused.Count > 0)
            warnings.Add($"{unused.Count} EMA tensor(s) shadow no model.* weight of the file and were left out: " +
                string.Join(", ", unused.Take(5)) + (unused.Count > 5 ? ", ..." : ""));
        var keptNames = kept.Select(t => t.Key.Name).ToHashSet(StringComparer.Ordinal);
        return (shapes.Where(kv => keptNames.Contains(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal), kept);
    }

    /// <summary>
    /// Every tensor against the shapes the configs build: a folder's own or the given ones (a single file becoming a
    /// folder is checked against the configs it is written with, in <see cref="WriteDiffusers"/>). A single file copied
    /// to a single file without configs is not checked: no config describes it, and the standard family's may not be its own.
    /// </summary>
    private static void CheckShapes(SourceModel source, ModelFamily family, ModelFormat format, ConversionOptions options)
    {
        if (source.IsFolder)
            ArchitectureFit.Check(source.Path, options.ConfigDirectory ?? source.Path, source.Shapes.ToDictionary(kv => kv.Key, kv => (IReadOnlyList<long>)kv.Value));
        else if (format != ModelFormat.Diffusers && options.ConfigDirectory is { } configs)
            CheckSingleFileShapes(source, family, configs);
    }

    private static void CheckSingleFileShapes(SourceModel source, ModelFamily family, string configs) =>
        ArchitectureFit.Check(source.Path, configs, LdmKeyMap.ToDiffusers(source.SingleShapes, family).Tensors.ToDictionary(r => r.Target, r => r.Shape));

    private static bool IsFloating(SafetensorsDType dtype) => dtype is SafetensorsDType.F32 or SafetensorsDType.F64 or SafetensorsDType.BF16;

    /// <summary>Row-major float32/float64/bfloat16 bytes as float16, rounded to nearest even as torch's <c>.half()</c>.</summary>
    internal static byte[] ToHalf(SafetensorsDType dtype, byte[] bytes)
    {
        var result = new byte[bytes.Length / dtype.ElementSize() * 2];
        var halves = MemoryMarshal.Cast<byte, Half>(result.AsSpan());
        switch (dtype)
        {
            case SafetensorsDType.F32:
                var floats = MemoryMarshal.Cast<byte, float>(bytes.AsSpan());
                for (var i = 0; i < floats.Length; i++) halves[i] = (Half)floats[i];
                break;
            case SafetensorsDType.F64:
                // torch converts double to half through float (c10::Half has a float constructor only).
                var doubles = MemoryMarshal.Cast<byte, double>(bytes.AsSpan());
                for (var i = 0; i < doubles.Length; i++) halves[i] = (Half)(float)doubles[i];
                break;
            case SafetensorsDType.BF16:
                // bfloat16 is the top half of a float32, so widening is exact and only the narrowing rounds.
                var shorts = MemoryMarshal.Cast<byte, ushort>(bytes.AsSpan());
                for (var i = 0; i < shorts.Length; i++) halves[i] = (Half)BitConverter.Int32BitsToSingle(shorts[i] << 16);
                break;
            default:
                throw new ArgumentException($"{dtype.ToHeaderName()} is not converted to float16", nameof(dtype));
        }
        return result;
    }

    private sealed class Counter(int total, IProgress<ConversionProgress>? progress, CancellationToken cancellationToken)
    {
        private int done;

        /// <summary>The tensor, checking for cancellation before its bytes are made and reporting progress after.</summary>
        public ModelTensor Counted(ModelTensor tensor) => tensor with
        {
            Bytes = () =>
            {
                cancellationToken.ThrowIfCancellationRequested();
                var bytes = tensor.Bytes();
                progress?.Report(new ConversionProgress(++done, total));
                return bytes;
            },
        };
    }

    // ---- diffusers folders ----
    private static void WriteDiffusers(SourceModel source, string output, ModelFamily family, List<ModelTensor> plan, ConversionOptions options, List<string> warnings)
    {
        var components = ModelWriter.DiffusersComponents(plan);
        var isSdxl = components.Contains(ModelComponents.TextEncoder2);
        var missing = components.Where(c => plan.All(p => p.Key.Component != c)).ToList();
        if (missing.Count > 0)
            throw new UserInputException(source.Path, $"has no {string.Join(", ", missing)} weights; a diffusers folder needs every component");
        var loadOptions = new ModelLoadOptions(ConfigDirectory: options.ConfigDirectory, SearchRoots: options.SearchRoots);
        var configs = options.ConfigDirectory ?? (source.IsFolder ? source.Path : ModelLoader.FindConfigs(family, loadOptions));
        if (!source.IsFolder)
        {
            CheckFits(source.Path, configs, plan);
            CheckSingleFileShapes(source, family, configs);
        }

        var componentConfigs = components.ToDictionary(c => c, c => File.ReadAllText(ModelLoader.ConfigFile(configs, c)));
        // A single file's UNet is written with the depths its tensors show, as the loader builds it (a distilled SDXL is not the base).
        if (!source.IsFolder && options.ConfigDirectory is null)
        {
            var standard = UNet2DConditionConfig.Parse(componentConfigs[ModelComponents.Unet]);
            var fitted = UnetConfigInference.FitDepths(standard, [.. plan.Where(p => p.Key.Component == ModelComponents.Unet).Select(p => p.Key.Name)], source.Path);
            if (!ReferenceEquals(fitted, standard)) componentConfigs[ModelComponents.Unet] = ComponentConfigs.Unet(fitted);
        }
        ModelWriter.WriteDiffusersFolder(output, new DiffusersFolderContent(
            plan,
            componentConfigs,
            SchedulerConfig(source, configs, family, options, loadOptions, warnings),
            FindTokenizers(source.Path, isSdxl, loadOptions, warnings),
            family));
    }

    private static JsonObject SchedulerConfig(SourceModel source, string configs, ModelFamily family, ConversionOptions options, ModelLoadOptions loadOptions, List<string> warnings)
    {
        string? file = null;
        foreach (var candidate in new[] { configs, source.IsFolder ? source.Path : null }.OfType<string>())
            file ??= File.Exists(Path.Combine(candidate, "scheduler", "scheduler_config.json")) ? Path.Combine(candidate, "scheduler", "scheduler_config.json") : null;
        if (file is null && family != ModelFamily.Unknown)
        {
            try
            {
                var standard = Path.Combine(ModelLoader.FindConfigs(family, loadOptions), "scheduler", "scheduler_config.json");
                if (File.Exists(standard)) file = standard;
            }
            catch (UserInputException)
            {
                // No standard configs here: the default below is what the loader uses too.
            }
        }
        var config = file is null ? ModelLoader.DefaultScheduler() : JsonFiles.ReadObject(file);
        var prediction = options.PredictionType ?? (source.IsFolder ? null : ModelLoader.CompanionYamlPrediction(source.Path));
        if (prediction is not null)
            config["prediction_type"] = prediction;
        else if (!source.IsFolder && family == ModelFamily.V2 && options.ConfigDirectory is null)
            warnings.Add($"SD 2.x: the scheduler predicts {config["prediction_type"]?.GetValue<string>() ?? "epsilon"} as the 768-v model does; for a 512-base model give prediction_type epsilon");
        return config;
    }

    /// <summary>The tokenizer folder the loader would use for each tokenizer the model needs; a warning for each one not found.</summary>
    private static Dictionary<string, string> FindTokenizers(string input, bool isSdxl, ModelLoadOptions loadOptions, List<string> warnings)
    {
        var found = new Dictionary<string, string>(StringComparer.Ordinal);
        var roots = ModelLoader.SearchRoots(loadOptions);
        foreach (var sub in isSdxl ? new[] { "tokenizer", "tokenizer_2" } : ["tokenizer"])
        {
            try
            {
                found[sub] = ModelLoader.FindTokenizer(input, loadOptions, roots, sub);
            }
            catch (UserInputException e)
            {
                warnings.Add($"the folder has no {sub}/ (it will not load until one is added): {e.Message}");
            }
        }
        return found;
    }

    /// <summary>
    /// The configs a single file's tensors are written with must describe it: a few shape checks that need
    /// no engine catch the usual mistake (a non-standard model converted with the standard family's configs).
    /// </summary>
    private static void CheckFits(string input, string configs, List<ModelTensor> plan)
    {
        var shapes = plan.ToDictionary(p => p.Key, p => p.Shape);
        var problems = new List<string>();
        IReadOnlyList<long>? Shape(string component, string name) => shapes.GetValueOrDefault(new TensorKey(component, name));
        int Count(string component, string prefix) => plan.Where(p => p.Key.Component == component && p.Key.Name.StartsWith(prefix, StringComparison.Ordinal))
            .Select(p => p.Key.Name[prefix.Length..].Split('.')[0]).Distinct().Count();
        void Expect(string component, string what, long inFile, long inConfig)
        {
            if (inFile != inConfig) problems.Add($"{component} {what} is {inFile} in the file, {inConfig} in the config");
        }

        var unet = DiffusersConfig.Load<UNet2DConditionConfig>(ModelLoader.ConfigFile(configs, ModelComponents.Unet));
        if (Shape(ModelComponents.Unet, "conv_in.weight") is [var unetWidth, var unetIn, ..])
        {
            Expect(ModelComponents.Unet, "conv_in width", unetWidth, unet.BlockOutChannels[0]);
            Expect(ModelComponents.Unet, "in_channels", unetIn, unet.InChannels);
        }
        Expect(ModelComponents.Unet, "down block count", Count(ModelComponents.Unet, "down_blocks."), unet.DownBlockTypes.Count);
        if (plan.FirstOrDefault(p => p.Key.Component == ModelComponents.Unet && p.Key.Name.EndsWith(".attn2.to_k.weight", StringComparison.Ordinal)) is { Shape: [_, var context] })
            Expect(ModelComponents.Unet, "cross_attention_dim", context, unet.CrossAttentionDim[0]);

        var vae = DiffusersConfig.Load<AutoencoderKLConfig>(ModelLoader.ConfigFile(configs, ModelComponents.Vae));
        if (Shape(ModelComponents.Vae, "encoder.conv_in.weight") is [var vaeWidth, ..])
            Expect(ModelComponents.Vae, "conv_in width", vaeWidth, vae.BlockOutChannels[0]);
        if (Shape(ModelComponents.Vae, "quant_conv.weight") is [var moments, ..])
            Expect(ModelComponents.Vae, "latent_channels", moments / 2, vae.LatentChannels);
        Expect(ModelComponents.Vae, "level count", Count(ModelComponents.Vae, "encoder.down_blocks."), vae.BlockOutChannels.Count);

        foreach (var component in new[] { ModelComponents.TextEncoder, ModelComponents.TextEncoder2 })
        {
            if (plan.All(p => p.Key.Component != component)) continue;
            var text = ClipTextConfig.Load(ModelLoader.ConfigFile(configs, component));
            if (Shape(component, "text_model.embeddings.token_embedding.weight") is [var vocab, var hidden])
            {
                Expect(component, "vocab_size", vocab, text.VocabSize);
                Expect(component, "hidden_size", hidden, text.HiddenSize);
            }
            Expect(component, "num_hidden_layers", Count(component, "text_model.encoder.layers."), text.NumHiddenLayers);
        }

        if (problems.Count > 0)
            throw new UserInputException(input, $"does not fit the architecture of '{configs}': {string.Join("; ", problems)}",
                "pass config_directory, a diffusers folder holding the model's own configs");
    }

    // ---- reading ----
    /// <summary>A model's tensors keyed as <see cref="LdmKeyMap"/> wants them: per component for a folder, component "" for a single file.</summary>
    private sealed class SourceModel : IDisposable
    {
        private readonly Dictionary<string, TensorFile> files;

        private SourceModel(string path, bool isFolder, Dictionary<string, TensorFile> files)
        {
            Path = path;
            IsFolder = isFolder;
            this.files = files;
            Shapes = files.SelectMany(f => f.Value.Shapes.Select(kv => KeyValuePair.Create(new TensorKey(f.Key, kv.Key), kv.Value))).ToDictionary();
        }

        public string Path { get; }
        public bool IsFolder { get; }
        public Dictionary<TensorKey, long[]> Shapes { get; }

        /// <summary>Every tensor, its bytes read when they are asked for.</summary>
        public IEnumerable<ModelTensor> Tensors => Shapes.Select(kv => new ModelTensor(kv.Key, DTypeOf(kv.Key), kv.Value, () => Read(kv.Key)));
        public IReadOnlyDictionary<string, long[]> SingleShapes => files[ModelComponents.SingleFile].Shapes;

        public SafetensorsDType DTypeOf(TensorKey key) => files[key.Component].DTypeOf(key.Name);

        public byte[] Read(TensorKey key) => files[key.Component].ReadBytes(key.Name);

        public static SourceModel Open(string path)
        {
            var files = new Dictionary<string, TensorFile>(StringComparer.Ordinal);
            try
            {
                if (!Directory.Exists(path))
                {
                    files[ModelComponents.SingleFile] = TensorFile.Open(path);
                    return new SourceModel(path, false, files);
                }
                if (!File.Exists(System.IO.Path.Combine(path, "unet", "config.json")))
                    throw new UserInputException(path, "is not a diffusers model folder: it has no unet/config.json (expected model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)");
                foreach (var component in new[] { ModelComponents.Unet, ModelComponents.Vae, ModelComponents.TextEncoder, ModelComponents.TextEncoder2 })
                {
                    var folder = System.IO.Path.Combine(path, component);
                    if (component == ModelComponents.TextEncoder2 && !Directory.Exists(folder)) continue;
                    files[component] = TensorFile.Open(ModelLoader.WeightsFile(folder));
                }
                return new SourceModel(path, true, files);
            }
            catch
            {
                foreach (var f in files.Values) f.Dispose();
                throw;
            }
        }

        public void Dispose()
        {
            foreach (var f in files.Values) f.Dispose();
        }
    }
}
