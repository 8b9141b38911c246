using System.Text.Json;
using Microsoft.EntityFrameworkCore;
using SdAppliance.Appliance.Persistence;
using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Formats;
using SdAppliance.Imaging;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;

namespace SdAppliance.Appliance.Generation;

/// <summary>How generation uses memory.</summary>
public sealed class GenerationOptions
{
    /// <summary>Models kept loaded on each device; the least recently used one beyond this is freed.</summary>
    public int ModelsPerDevice { get; init; } = 2;
}

/// <summary>
/// What generation jobs share: the appliance's current model (a <see cref="Setting"/>, the demo model until someone
/// picks another), the models loaded so far (once per model and device, a few per device), and the rules that turn a
/// <see cref="GenerationJobRequest"/> into the pipeline's <see cref="GenerationRequest"/>.
/// </summary>
public sealed class GenerationService(
    ApplianceOptions options, GenerationOptions generationOptions, IDbContextFactory<ApplianceDb> databases, ModelCatalog catalog) : IDisposable
{
    /// <summary>The <see cref="Setting"/> that holds the current model's catalog name.</summary>
    public const string CurrentModelKey = "generation.current_model";

    private readonly Lock gate = new();
    private readonly List<LoadedModel> loaded = [];  // least recently used first

    public ModelCatalog Catalog => catalog;

    /// <summary>Where prompts' <c>&lt;lora:&gt;</c>, embeddings and <c>&lt;hypernet:&gt;</c> are found: the application's and the data folder's.</summary>
    public AdapterFolders AdapterFolders => new(catalog.Folders("lora"), catalog.Folders("embeddings"), catalog.Folders("hypernetworks"));

    /// <summary>The model generations use when they name none: the one last chosen, while it is in the catalog, else the demo model.</summary>
    public async Task<CatalogModel> CurrentModelAsync(CancellationToken cancellationToken)
    {
        await using var db = await databases.CreateDbContextAsync(cancellationToken);
        var setting = await db.Settings.AsNoTracking().FirstOrDefaultAsync(s => s.Key == CurrentModelKey, cancellationToken);
        var name = setting is null ? null : JsonSerializer.Deserialize<string>(setting.ValueJson);
        return (name is null ? null : catalog.TryFind(name)) ?? catalog.Default
            ?? throw new UserInputException("model", "there is no model: the demo model is missing and the catalog is empty",
                $"put a model into {Path.Combine(options.DataFolder, "models")}");
    }

    /// <summary>Makes <paramref name="name"/> (an A1111 title, a name or a file name) the current model.</summary>
    /// <exception cref="UserInputException">naming <c>model</c> when the catalog has no such model.</exception>
    public async Task<CatalogModel> SetCurrentModelAsync(string name, CancellationToken cancellationToken)
    {
        var model = catalog.Find(name);
        await using var db = await databases.CreateDbContextAsync(cancellationToken);
        var value = JsonSerializer.Serialize(model.Name);
        var setting = await db.Settings.FirstOrDefaultAsync(s => s.Key == CurrentModelKey, cancellationToken);
        if (setting is null) db.Settings.Add(new Setting { Key = CurrentModelKey, ValueJson = value });
        else setting.ValueJson = value;
        await db.SaveChangesAsync(cancellationToken);
        return model;
    }

    /// <summary>The request's model, or the current one.</summary>
    public async Task<CatalogModel> ModelForAsync(GenerationJobRequest request, CancellationToken cancellationToken) =>
        request.Model is { } name ? catalog.Find(name) : await CurrentModelAsync(cancellationToken);

    /// <summary>
    /// Checks a request before it is queued, so a mistake is answered at once, naming the field: the model, the sampler
    /// and schedule type, counts, sizes, LoRAs (<see cref="GenerationRequest.Validate"/>'s rules); stores the init image
    /// (its bytes, checked to be an image) under <c>inputs/</c> and returns the request that names it.
    /// </summary>
    public async Task<GenerationJobRequest> PrepareAsync(GenerationJobRequest request, ReadOnlyMemory<byte>? initImage, CancellationToken cancellationToken)
    {
        if (request.InitImage is not null)
            throw new GenerationRequestException("init_image", "is set by the appliance from an uploaded image", "send the image itself, not a file name");
        await ModelForAsync(request, cancellationToken);
        ToPipelineRequest(request, init: null).Validate();
        if (initImage is not { } bytes) return request;

        var format = ImageCodec.DetectFormat(bytes.Span)
            ?? throw new GenerationRequestException("init_image", "is not a PNG, JPEG or WebP image");
        ImageCodec.Identify(bytes.Span, "init_image");
        var now = DateTime.UtcNow;
        var relative = Path.Combine("inputs", now.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture),
            $"{Guid.NewGuid():N}.{format.ToString().ToLowerInvariant()}");
        var path = Path.Combine(options.DataFolder, relative);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        AtomicFile.WriteAllBytes(path, bytes);
        return request with { InitImage = relative };
    }

    /// <summary>The pipeline's request for one batch of a job (its sampler resolved, its LoRAs found in the catalog).</summary>
    public GenerationRequest ToPipelineRequest(GenerationJobRequest request, RgbImage? init)
    {
        if (request.NIter < 1) throw new GenerationRequestException("n_iter", $"must be at least 1, got {request.NIter}");
        return new GenerationRequest
        {
            Prompt = request.Prompt,
            NegativePrompt = request.NegativePrompt,
            Seed = request.Seed < 0 ? -1 : request.Seed,
            Steps = request.Steps,
            Sampler = SamplerNames.Resolve(request.Sampler, request.Scheduler),
            CfgScale = request.CfgScale,
            Width = request.Width,
            Height = request.Height,
            BatchSize = request.BatchSize,
            ClipSkip = request.ClipSkip,
            InitImage = init,
            Strength = request.Strength,
            Loras = [.. request.Loras.Select(l => (catalog.FindLora(l.Name), l.Weight))],
        };
    }

    /// <summary>The init image a prepared request names, read from the data folder.</summary>
    internal RgbImage? LoadInitImage(GenerationJobRequest request)
    {
        if (request.InitImage is not { } relative) return null;
        var data = Path.GetFullPath(options.DataFolder) + Path.DirectorySeparatorChar;
        var path = Path.GetFullPath(Path.Combine(data, relative));
        if (!path.StartsWith(data, StringComparison.Ordinal))
            throw new GenerationRequestException("init_image", $"'{relative}' is outside the data folder");
        return ImageCodec.Load(path, new ImageDecodeOptions { Channels = ChannelMode.Rgb });
    }

    /// <summary>
    /// The model loaded on the device: loaded once and kept; beyond <see cref="GenerationOptions.ModelsPerDevice"/> the
    /// device's least recently used one is freed. The scheduler runs one generation per device at a time, so a freed
    /// model is never one in use.
    /// </summary>
    internal StableDiffusionModel Load(CatalogModel model, Device device, CancellationToken cancellationToken)
    {
        LoadedModel entry;
        List<LoadedModel> evicted;
        lock (gate)
        {
            entry = loaded.FirstOrDefault(m => m.Path == model.Path && m.Device == device) ?? new LoadedModel(model.Path, device);
            loaded.Remove(entry);
            loaded.Add(entry);
            evicted = [.. loaded.Where(m => m.Device == device).SkipLast(Math.Max(1, generationOptions.ModelsPerDevice))];
            foreach (var e in evicted) loaded.Remove(e);
        }
        foreach (var e in evicted) e.Dispose();
        return entry.Get(() => ModelLoader.Load(model.Path, new ModelLoadOptions(Device: device, SearchRoots: [options.DataFolder]), cancellationToken));
    }

    public void Dispose()
    {
        lock (gate)
        {
            foreach (var m in loaded) m.Dispose();
            loaded.Clear();
        }
    }

    private sealed class LoadedModel(string path, Device device) : IDisposable
    {
        private readonly Lock gate = new();
        private StableDiffusionModel? model;

        public string Path { get; } = path;
        public Device Device { get; } = device;

        // A load that fails or is cancelled leaves nothing behind: the next job tries again.
        public StableDiffusionModel Get(Func<StableDiffusionModel> load)
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
