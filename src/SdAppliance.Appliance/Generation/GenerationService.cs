using System.Globalization;
using System.Text.Json;
using Microsoft.EntityFrameworkCore;
using SdAppliance.Appliance.Catalog;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Persistence;
using SdAppliance.Appliance.Storage;
using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Formats;
using SdAppliance.Imaging;
using SdAppliance.Models.Loading;
using SdAppliance.Onnx.Runtime;
using SdAppliance.Torch;

namespace SdAppliance.Appliance.Generation;

/// <summary>How generation uses memory.</summary>
public sealed class GenerationOptions
{
    /// <summary>Models kept loaded on each device; the least recently used one beyond this is freed.</summary>
    public int ModelsPerDevice { get; init; } = 2;

    /// <summary>
    /// A running generation's preview (<see cref="Jobs.JobEventTypes.Preview"/>) is drawn at most this often (never at the
    /// last step: the picture itself follows); <see cref="TimeSpan.Zero"/>: at every step, null: never.
    /// </summary>
    public TimeSpan? PreviewInterval { get; init; } = TimeSpan.FromSeconds(1);
}

/// <summary>
/// What generation jobs share: the appliance's current model (a <see cref="Setting"/>, the demo model until someone
/// picks another), the models loaded so far (once per model and device, a few per device), and the rules that turn a
/// <see cref="GenerationJobRequest"/> into the pipeline's <see cref="GenerationRequest"/>.
/// </summary>
public sealed class GenerationService(
    DataFolder data, PathGuard paths, GenerationOptions generationOptions, IDbContextFactory<ApplianceDb> databases, ModelCatalog catalog, OutputService outputs,
    VaeCatalog vaes) : IDisposable
{
    /// <summary>The <see cref="Setting"/> that holds the current model's catalog name.</summary>
    public const string CurrentModelKey = "generation.current_model";

    /// <summary>The <see cref="Setting"/> that holds A1111's <c>sd_vae</c>: a VAE's name in <see cref="VaeCatalog"/>, or Automatic (the model's own).</summary>
    public const string VaeKey = "generation.sd_vae";

    /// <summary>Where uploaded init images are kept, in the data folder.</summary>
    public const string InputsFolder = "inputs";

    private readonly Lock gate = new();
    private readonly List<LoadedModel> loaded = [];  // least recently used first

    /// <summary>Where prompts' <c>&lt;lora:&gt;</c>, embeddings and <c>&lt;hypernet:&gt;</c> are found: the application's and the data folder's.</summary>
    public AdapterFolders AdapterFolders => new(data.LoraFolders, data.EmbeddingFolders, data.HypernetworkFolders);

    /// <summary>The model hash A1111 shows for a base model (a single file's; a diffusers folder has none), from the catalog's cache.</summary>
    public string? ModelHash(ModelEntry model) => File.Exists(model.Path) ? catalog.Hashes.ModelShortHash(model.Path) : null;

    /// <summary>
    /// The model generations use when they name none: the one last chosen, while the caller can see it in the catalog,
    /// else the demo model (else the first there is).
    /// </summary>
    public async Task<ModelEntry> CurrentModelAsync(Caller caller, CancellationToken cancellationToken)
    {
        await using var db = await databases.CreateDbContextAsync(cancellationToken);
        var setting = await db.Settings.AsNoTracking().FirstOrDefaultAsync(s => s.Key == CurrentModelKey, cancellationToken);
        var name = setting is null ? null : JsonSerializer.Deserialize<string>(setting.ValueJson);
        if (name is not null && await catalog.FindAsync(caller, ModelKind.Checkpoint, name, cancellationToken) is { Problem: null } chosen) return chosen;
        var models = await catalog.ListAsync(caller, ModelKind.Checkpoint, cancellationToken);
        return models.FirstOrDefault(m => m.IsDemo) ?? models.FirstOrDefault(m => m.Problem is null)
            ?? throw new UserInputException("model", "there is no model: the demo model is missing and the catalog is empty",
                $"put a model into {data.Models}");
    }

    /// <summary>Makes <paramref name="name"/> (an A1111 title, a name or a file name) the appliance's current model.</summary>
    /// <exception cref="UserInputException">naming <c>model</c> when the catalog has no such model the caller can see.</exception>
    public async Task<ModelEntry> SetCurrentModelAsync(Caller caller, string name, CancellationToken cancellationToken)
    {
        var model = await FindModelAsync(caller, name, cancellationToken);
        await using var db = await databases.CreateDbContextAsync(cancellationToken);
        var value = JsonSerializer.Serialize(model.RelativePath);
        var setting = await db.Settings.FirstOrDefaultAsync(s => s.Key == CurrentModelKey, cancellationToken);
        if (setting is null) db.Settings.Add(new Setting { Key = CurrentModelKey, ValueJson = value });
        else setting.ValueJson = value;
        await db.SaveChangesAsync(cancellationToken);
        return model;
    }

    /// <summary>A1111's <c>sd_vae</c> option: the name of the VAE generations use when they name none, Automatic (the model's own) by default.</summary>
    public async Task<string> CurrentVaeAsync(CancellationToken cancellationToken)
    {
        await using var db = await databases.CreateDbContextAsync(cancellationToken);
        var setting = await db.Settings.AsNoTracking().FirstOrDefaultAsync(s => s.Key == VaeKey, cancellationToken);
        return setting is null ? VaeCatalog.ModelsOwn[0] : JsonSerializer.Deserialize<string>(setting.ValueJson) ?? VaeCatalog.ModelsOwn[0];
    }

    /// <summary>Sets <c>sd_vae</c>: Automatic or None (the model's own) or a VAE of <c>models/vae/</c>; an unknown one is refused naming <paramref name="field"/>.</summary>
    public async Task<string> SetVaeAsync(string name, CancellationToken cancellationToken, string field = "sd_vae")
    {
        var entry = vaes.Find(name, field);
        var value = entry?.Name ?? VaeCatalog.ModelsOwn.First(n => string.Equals(n, name, StringComparison.OrdinalIgnoreCase) || string.IsNullOrWhiteSpace(name));
        await using var db = await databases.CreateDbContextAsync(cancellationToken);
        var json = JsonSerializer.Serialize(value);
        var setting = await db.Settings.FirstOrDefaultAsync(s => s.Key == VaeKey, cancellationToken);
        if (setting is null) db.Settings.Add(new Setting { Key = VaeKey, ValueJson = json });
        else setting.ValueJson = json;
        await db.SaveChangesAsync(cancellationToken);
        return value;
    }

    /// <summary>The VAE a request decodes with: its own <see cref="GenerationJobRequest.Vae"/>, else the <c>sd_vae</c> option; null for the model's own.</summary>
    public async Task<VaeEntry?> VaeForAsync(GenerationJobRequest request, CancellationToken cancellationToken) =>
        vaes.Find(request.Vae ?? await CurrentVaeAsync(cancellationToken), request.Vae is null ? "sd_vae" : "vae");

    /// <summary>The request's refiner from the catalog, or null when it asks for none.</summary>
    public async Task<ModelEntry?> RefinerForAsync(Caller caller, GenerationJobRequest request, CancellationToken cancellationToken) =>
        request.Refiner is { } name ? await FindModelAsync(caller, name, cancellationToken, "refiner") : null;

    /// <summary>The request's model, or the current one.</summary>
    public async Task<ModelEntry> ModelForAsync(Caller caller, GenerationJobRequest request, CancellationToken cancellationToken) =>
        request.Model is { } name ? await FindModelAsync(caller, name, cancellationToken) : await CurrentModelAsync(caller, cancellationToken);

    private async Task<ModelEntry> FindModelAsync(Caller caller, string name, CancellationToken cancellationToken, string field = "model")
    {
        var model = await catalog.FindAsync(caller, ModelKind.Checkpoint, name, cancellationToken);
        if (model is null)
        {
            var models = await catalog.ListAsync(caller, ModelKind.Checkpoint, cancellationToken);
            throw new UserInputException(field, $"model '{name}' not found; the models are: {string.Join(", ", models.Select(m => m.Title))}");
        }
        if (model.Problem is { } problem) throw new UserInputException(field, $"model '{name}' cannot be used: {problem}");
        return model;
    }

    /// <summary>
    /// Checks a request before it is queued, so a mistake is answered at once, naming the field: the model, the sampler
    /// and schedule type, counts, sizes, LoRAs (<see cref="GenerationRequest.Validate"/>'s rules); stores the init image
    /// (its bytes, checked to be an image) under <c>inputs/</c> and returns the request that names it.
    /// </summary>
    public async Task<GenerationJobRequest> PrepareAsync(Caller caller, GenerationJobRequest request, byte[]? initImage, CancellationToken cancellationToken)
    {
        var model = await ModelForAsync(caller, request, cancellationToken);
        await RefinerForAsync(caller, request, cancellationToken);
        request = WithModelDefaults(model, request, initImage is not null || request.InitImage is not null);
        var pipelineRequest = await ToPipelineRequestAsync(caller, request, init: null, cancellationToken);
        pipelineRequest.Validate();
        // A family the catalog could not tell is checked by the pipeline when the model is loaded.
        if (model.Family is not null) pipelineRequest.CheckMicroConditioningApplies(model.Family == "SDXL", model.Title);
        ChooseBackend(model, request, pipelineRequest, await VaeForAsync(request, cancellationToken) is not null);
        if (initImage is not null || request.InitImage is not null) GenerationRequest.CheckImageToImageSteps(pipelineRequest.Steps, request.Strength);
        if (initImage is not { } bytes)
        {
            if (request.InitImage is { } named) await CheckNamedInitImageAsync(caller, named, cancellationToken);
            return request;
        }

        var format = ImageCodec.DetectFormat(bytes)
            ?? throw new GenerationRequestException("init_image", "is not a PNG, JPEG or WebP image");
        ImageCodec.Identify(bytes, "init_image");
        var relative = $"{InputsFolder}/{DateTime.UtcNow.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture)}/{Guid.NewGuid():N}.{format.ToString().ToLowerInvariant()}";
        var path = paths.Resolve(relative, data.FullPath, "init_image");
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        AtomicFile.WriteAllBytes(path, bytes);
        return request with { InitImage = relative };
    }

    /// <summary>
    /// <paramref name="request"/> with what it leaves out taken from its model's files (<see cref="GenerationDefaults"/>,
    /// its LoRAs' and prompt's LCM-LoRA included): the sampler, steps and CFG scale, and, with no schedule type chosen,
    /// the one for the model's timestep spacing (a Turbo model's SGM Uniform). <paramref name="ordinary"/> is what a
    /// front end fills in for a model that is no few-step one, where its defaults are not <see cref="GenerationDefaults.Standard"/>
    /// (A1111's API: 50 steps of Euler).
    /// </summary>
    public async Task<GenerationJobRequest> WithModelDefaultsAsync(Caller caller, GenerationJobRequest request, bool imageToImage,
        GenerationDefaults? ordinary, CancellationToken cancellationToken) =>
        WithModelDefaults(await ModelForAsync(caller, request, cancellationToken), request, imageToImage, ordinary);

    /// <summary>As <see cref="WithModelDefaultsAsync"/> on a model already found (the job runner's, for a job queued unprepared).</summary>
    public static GenerationJobRequest WithModelDefaults(ModelEntry model, GenerationJobRequest request, bool imageToImage, GenerationDefaults? ordinary = null)
    {
        var defaults = GenerationDefaults.For(model.Path, request.Prompt, request.Loras.Select(l => l.Name));
        if (defaults.Kind == FewStepKind.None && ordinary is not null) defaults = ordinary;
        return request with
        {
            Sampler = request.Sampler ?? defaults.Sampler,
            Steps = request.Steps ?? defaults.StepsFor(imageToImage ? request.Strength : null),
            CfgScale = request.CfgScale ?? defaults.CfgScale,
            Scheduler = SamplerNames.IsAutomatic(request.Scheduler) ? SamplerNames.ScheduleTypeFor(defaults.TimestepSpacing) ?? request.Scheduler : request.Scheduler,
        };
    }

    /// <summary>The rules that need neither the catalog nor the database (the job queue checks them at submission).</summary>
    public void Check(GenerationJobRequest request)
    {
        ToPipelineRequest(request, init: null, loras: []).Validate();
        if (request.Backend is { } backend && !BackendChoice.Names.Contains(backend.ToLowerInvariant()))
            throw new GenerationRequestException("backend", $"'{backend}' is not one of {string.Join(", ", BackendChoice.Names)}");
        if (request.InitImage is { } named) InitImagePath(named);
    }

    /// <summary>The engine for <paramref name="request"/> on <paramref name="model"/>: <see cref="BackendChoice"/>'s rule, refusals naming <c>backend</c>.</summary>
    /// <param name="separateVae">A VAE apart from the model's is asked for: an ONNX export's VAE is fixed in its graphs, so libtorch runs it.</param>
    public static BackendDecision ChooseBackend(ModelEntry model, GenerationJobRequest request, GenerationRequest pipelineRequest, bool separateVae = false)
    {
        var decision = BackendChoice.Choose(request.Backend ?? BackendChoice.Auto, model.Path, BackendChoice.AsksForRuntimeAdapters(pipelineRequest));
        if (!separateVae || decision.Backend != InferenceBackend.OnnxRuntime) return decision;
        var askedForOnnx = request.Backend is not null && !string.Equals(request.Backend, BackendChoice.Auto, StringComparison.OrdinalIgnoreCase);
        if (askedForOnnx || !BackendChoice.HasLibtorchWeights(model.Path))
            throw new UserInputException(request.Vae is null ? "sd_vae" : "vae", $"a VAE apart from the model's cannot be used on the ONNX backend: the VAE of '{model.Title}' is fixed in its vae_decoder graph",
                $"choose {VaeCatalog.ModelsOwn[0]} (the model's own VAE), or the libtorch backend");
        return new BackendDecision(InferenceBackend.Libtorch, "a VAE apart from the model's (sd_vae) is asked for, which an export's fixed graphs cannot take");
    }

    /// <summary>The pipeline's request for one batch of a job (its sampler resolved, its LoRAs found in the catalog).</summary>
    public async Task<GenerationRequest> ToPipelineRequestAsync(Caller caller, GenerationJobRequest request, RgbImage? init, CancellationToken cancellationToken)
    {
        var loras = new List<(string, double)>();
        foreach (var lora in request.Loras)
        {
            var entry = await catalog.FindAsync(caller, ModelKind.Lora, lora.Name, cancellationToken)
                ?? throw new GenerationRequestException("loras", $"no LoRA '{lora.Name}' in the catalog");
            loras.Add((entry.Path, lora.Weight));
        }
        return ToPipelineRequest(request, init, loras);
    }

    // A request not prepared against its model (the queue's check) is checked with the standard defaults.
    private static GenerationRequest ToPipelineRequest(GenerationJobRequest request, RgbImage? init, IReadOnlyList<(string, double)> loras)
    {
        if (request.NIter < 1) throw new GenerationRequestException("n_iter", $"must be at least 1, got {request.NIter}");
        if (request.RefinerSwitchAt is not null && request.Refiner is null)
            throw new GenerationRequestException("refiner_switch_at", "says when the refiner takes over, but no refiner is named", "name a refiner, or leave refiner_switch_at out");
        var sampler = SamplerNames.Resolve(request.Sampler ?? GenerationDefaults.Standard.Sampler, request.Scheduler);
        return new GenerationRequest
        {
            Prompt = request.Prompt,
            NegativePrompt = request.NegativePrompt,
            Seed = request.Seed < 0 ? -1 : request.Seed,
            Steps = request.Steps ?? GenerationDefaults.Standard.Steps,
            Sampler = sampler.Sampler,
            TimestepSpacing = sampler.TimestepSpacing,
            CfgScale = request.CfgScale ?? GenerationDefaults.Standard.CfgScale,
            Width = request.Width,
            Height = request.Height,
            BatchSize = request.BatchSize,
            ClipSkip = request.ClipSkip,
            InitImage = init,
            Strength = request.Strength,
            Loras = loras,
            RefinerSwitchAt = request.Refiner is null ? null : request.RefinerSwitchAt ?? GenerationRequest.DefaultRefinerSwitchAt,
            OriginalSize = Size(request.OriginalSize, nameof(GenerationRequest.OriginalSize)),
            CropsCoordsTopLeft = Crop(request.CropsCoordsTopLeft, nameof(GenerationRequest.CropsCoordsTopLeft)),
            TargetSize = Size(request.TargetSize, nameof(GenerationRequest.TargetSize)),
            NegativeOriginalSize = Size(request.NegativeOriginalSize, nameof(GenerationRequest.NegativeOriginalSize)),
            NegativeCropsCoordsTopLeft = Crop(request.NegativeCropsCoordsTopLeft, nameof(GenerationRequest.NegativeCropsCoordsTopLeft)),
            NegativeTargetSize = Size(request.NegativeTargetSize, nameof(GenerationRequest.NegativeTargetSize)),
        };
    }

    private static ConditioningSize? Size(IReadOnlyList<int>? pair, string property) =>
        pair is null ? null : ConditioningSize.FromPair(pair, GenerationRequest.FieldName(property));

    private static CropTopLeft? Crop(IReadOnlyList<int>? pair, string property) =>
        pair is null ? null : CropTopLeft.FromPair(pair, GenerationRequest.FieldName(property));

    /// <summary>
    /// An init image named instead of sent is one of the caller's outputs (an admin's: any): another user's pictures and
    /// uploads are not theirs to start from, and uploads under inputs/ are named by <see cref="PrepareAsync"/> alone.
    /// </summary>
    private async Task CheckNamedInitImageAsync(Caller caller, string named, CancellationToken cancellationToken)
    {
        const string outputsPrefix = "outputs/";
        if (!named.StartsWith(outputsPrefix, StringComparison.Ordinal)
            || await outputs.OpenAsync(caller, named[outputsPrefix.Length..], cancellationToken) is null)
            throw new GenerationRequestException("init_image", $"'{named}' is not one of your outputs",
                "send the image itself, or name one of your outputs (outputs/DAY/FILE.png)");
    }

    // An init image named by a prepared request is a file of the data folder (an upload under inputs/, an earlier output).
    private string InitImagePath(string relative)
    {
        var path = paths.Resolve(relative, data.FullPath, "init_image");
        return File.Exists(path) ? path : throw new GenerationRequestException("init_image", $"'{relative}' does not exist in the data folder");
    }

    /// <summary>The init image a prepared request names, read from the data folder.</summary>
    internal RgbImage? LoadInitImage(GenerationJobRequest request) =>
        request.InitImage is { } relative ? ImageCodec.Load(InitImagePath(relative), new ImageDecodeOptions { Channels = ChannelMode.Rgb }) : null;

    /// <summary>
    /// The model loaded on the device: loaded once and kept; beyond <see cref="GenerationOptions.ModelsPerDevice"/> the
    /// device's least recently used one is freed. The scheduler runs one generation per device at a time, so a freed
    /// model is never one in use.
    /// </summary>
    /// <param name="vae">A VAE in place of the model's own (<see cref="VaeForAsync"/>); a model is kept loaded once per VAE.</param>
    internal IDiffusionModel Load(ModelEntry model, Device device, CancellationToken cancellationToken, string? vae = null) =>
        Load(model, device, InferenceBackend.Libtorch, cancellationToken, vae);

    /// <summary>The model loaded for <paramref name="backend"/>: its libtorch modules, or its export's ONNX Runtime sessions (each kept on its own).</summary>
    internal IDiffusionModel Load(ModelEntry model, Device device, InferenceBackend backend, CancellationToken cancellationToken, string? vae = null)
    {
        LoadedModel entry;
        List<LoadedModel> evicted;
        lock (gate)
        {
            entry = loaded.FirstOrDefault(m => m.Path == model.Path && m.Device == device && m.Backend == backend && m.Vae == vae) ?? new LoadedModel(model.Path, device, backend, vae);
            loaded.Remove(entry);
            loaded.Add(entry);
            evicted = [.. loaded.Where(m => m.Device == device).SkipLast(Math.Max(1, generationOptions.ModelsPerDevice))];
            foreach (var e in evicted) loaded.Remove(e);
        }
        foreach (var e in evicted) e.Dispose();
        return entry.Get(() => backend == InferenceBackend.OnnxRuntime
            ? OnnxDiffusionModel.Load(model.Path, new OnnxRuntimeOptions
            {
                Provider = device.IsCuda ? OnnxProvider.Cuda : OnnxProvider.Cpu,
                DeviceId = device.IsCuda ? Math.Max(device.Index, 0) : 0,
                SearchRoots = data.SearchRoots,
            })
            : ModelLoader.Load(model.Path, new ModelLoadOptions(Device: device, SearchRoots: data.SearchRoots, Vae: vae), cancellationToken));
    }

    public void Dispose()
    {
        lock (gate)
        {
            foreach (var m in loaded) m.Dispose();
            loaded.Clear();
        }
    }

    private sealed class LoadedModel(string path, Device device, InferenceBackend backend, string? vae) : IDisposable
    {
        private readonly Lock gate = new();
        private IDiffusionModel? model;

        public string Path { get; } = path;
        public string? Vae { get; } = vae;
        public Device Device { get; } = device;
        public InferenceBackend Backend { get; } = backend;

        // A load that fails or is cancelled leaves nothing behind: the next job tries again.
        public IDiffusionModel Get(Func<IDiffusionModel> load)
        {
            lock (gate) return model ??= load();
        }

        public void Dispose()
        {
            lock (gate)
            {
                model?.Dispose();
                model = null;
            }
        }
    }
}
