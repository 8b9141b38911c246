using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using SdAppliance.Appliance;
using SdAppliance.Appliance.Generation;
using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Web.Security;

namespace SdAppliance.Web.A1111;

/// <summary>
/// The fields of A1111's txt2img and img2img requests that the appliance uses; every field is optional and a null is
/// "not given". Anything else a client sends (hires fix, restore faces, scripts, styles...) is accepted and ignored, as
/// A1111 ignores what it does not know.
/// </summary>
internal sealed class A1111GenerationRequest
{
    public string? Prompt { get; init; }
    public string? NegativePrompt { get; init; }
    public long? Seed { get; init; }
    public string? SamplerName { get; init; }

    /// <summary>Deprecated: a sampler name too, used only without <see cref="SamplerName"/>.</summary>
    public string? SamplerIndex { get; init; }

    public string? Scheduler { get; init; }
    public int? BatchSize { get; init; }
    public int? NIter { get; init; }
    public int? Steps { get; init; }
    public double? CfgScale { get; init; }
    public int? Width { get; init; }
    public int? Height { get; init; }
    public double? DenoisingStrength { get; init; }

    /// <summary>Not an A1111 field, but what SillyTavern forwards; <c>override_settings.CLIP_stop_at_last_layers</c> wins.</summary>
    public int? ClipSkip { get; init; }

    /// <summary>Settings for this request only: <c>sd_model_checkpoint</c>, <c>sd_vae</c> and <c>CLIP_stop_at_last_layers</c> are honoured.</summary>
    public Dictionary<string, JsonElement>? OverrideSettings { get; init; }

    /// <summary>A1111's refiner: a checkpoint title or name ("None" or empty: no refiner) and the fraction of the steps it starts at.</summary>
    public string? RefinerCheckpoint { get; init; }

    public double? RefinerSwitchAt { get; init; }

    public bool? SendImages { get; init; }
    public List<string?>? InitImages { get; init; }
    public bool? IncludeInitImages { get; init; }
}

/// <summary>txt2img and img2img: the request with A1111's defaults, through the job queue, answered in A1111's shape.</summary>
internal static class A1111Generation
{
    /// <summary>
    /// A1111's request defaults (its API models), not sdapp generate's, for a model that is no few-step one; a Turbo or
    /// LCM model's sampler, steps and CFG scale are its own (<see cref="GenerationDefaults"/>).
    /// </summary>
    internal static readonly GenerationDefaults OrdinaryDefaults = new(FewStepKind.None, "Euler", 50, 7, null, "A1111's API defaults");

    private const int DefaultSize = 512;
    private const double DefaultDenoisingStrength = 0.75;

    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowReadingFromString,
    };

    public static async Task<IResult> Txt2ImgAsync(HttpContext http, GenerationJobs jobs, GenerationService generation, ApplianceOptions options, CancellationToken cancellationToken)
    {
        var body = await A1111Errors.ReadObjectAsync(http.Request, cancellationToken);
        var request = A1111Errors.Bind<A1111GenerationRequest>(body, Json);
        var job = await generation.WithModelDefaultsAsync(http.User.ToCaller(), ToJobRequest(request), imageToImage: false, OrdinaryDefaults, cancellationToken);
        return await RunAsync(http, jobs, options, body, request, job, initImage: null, cancellationToken);
    }

    public static async Task<IResult> Img2ImgAsync(HttpContext http, GenerationJobs jobs, GenerationService generation, ApplianceOptions options, CancellationToken cancellationToken)
    {
        var body = await A1111Errors.ReadObjectAsync(http.Request, cancellationToken);
        var request = A1111Errors.Bind<A1111GenerationRequest>(body, Json);
        if (request.InitImages is not [_, ..])
            throw new A1111Exception(StatusCodes.Status404NotFound, "HTTPException", "Init image not found");
        // A1111 uses the first init image for the whole batch too.
        var image = A1111Images.Decode(request.InitImages[0], "init_images.0");
        var job = await generation.WithModelDefaultsAsync(http.User.ToCaller(),
            ToJobRequest(request) with { Strength = request.DenoisingStrength ?? DefaultDenoisingStrength }, imageToImage: true, OrdinaryDefaults, cancellationToken);
        if (request.IncludeInitImages != true)
        {
            body["init_images"] = null;
            body["mask"] = null;
        }
        return await RunAsync(http, jobs, options, body, request, job, image, cancellationToken);
    }

    /// <summary>The job an A1111 request asks for, with A1111's defaults for what it leaves out (the sampler, steps and CFG scale: the model's, see <see cref="OrdinaryDefaults"/>).</summary>
    internal static GenerationJobRequest ToJobRequest(A1111GenerationRequest request)
    {
        var overrides = request.OverrideSettings ?? [];
        var refiner = NonEmpty(request.RefinerCheckpoint) is { } named && !named.Equals("None", StringComparison.OrdinalIgnoreCase) ? named : null;
        return new GenerationJobRequest
        {
            Model = Setting(overrides, "sd_model_checkpoint", JsonValueKind.String)?.GetString(),
            Vae = Setting(overrides, "sd_vae", JsonValueKind.String)?.GetString(),
            Prompt = request.Prompt ?? "",
            NegativePrompt = request.NegativePrompt ?? "",
            Seed = request.Seed ?? -1,
            Sampler = NonEmpty(request.SamplerName) ?? NonEmpty(request.SamplerIndex),
            Scheduler = request.Scheduler,
            Steps = request.Steps,
            CfgScale = request.CfgScale,
            Width = request.Width ?? DefaultSize,
            Height = request.Height ?? DefaultSize,
            BatchSize = request.BatchSize ?? 1,
            NIter = request.NIter ?? 1,
            ClipSkip = Setting(overrides, "CLIP_stop_at_last_layers", JsonValueKind.Number)?.GetInt32() ?? request.ClipSkip ?? 1,
            // A1111 reads the switch only with a refiner.
            Refiner = refiner,
            RefinerSwitchAt = refiner is null ? null : request.RefinerSwitchAt,
        };
    }

    private static JsonElement? Setting(Dictionary<string, JsonElement> overrides, string key, JsonValueKind kind) =>
        overrides.TryGetValue(key, out var value) && value.ValueKind == kind ? value : null;

    private static string? NonEmpty(string? text) => string.IsNullOrWhiteSpace(text) ? null : text;

    private static async Task<IResult> RunAsync(HttpContext http, GenerationJobs jobs, ApplianceOptions options, JsonObject body,
        A1111GenerationRequest request, GenerationJobRequest job, byte[]? initImage, CancellationToken cancellationToken)
    {
        var started = DateTime.Now;
        // An interrupted job answers as A1111 does when nothing was finished: no images.
        var result = await jobs.RunAsync(http.User.ToCaller(), job, initImage, cancellationToken)
            ?? new GenerationJobResult([], job.Width ?? 0, job.Height ?? 0, "", null, job.Sampler ?? "", []);
        var images = request.SendImages == false
            ? []
            : await Task.WhenAll(result.Images.Select(async i => Convert.ToBase64String(await File.ReadAllBytesAsync(Path.Combine(options.DataFolder, i.File), cancellationToken))));
        return Results.Json(new
        {
            images,
            parameters = Echo(body, job, initImage is not null),
            info = JsonSerializer.Serialize(Info(job, result, started, initImage is not null)),
        });
    }

    /// <summary>The request echoed, as A1111 does: what was sent, with the values used for the fields the appliance reads.</summary>
    private static JsonObject Echo(JsonObject body, GenerationJobRequest job, bool img2img)
    {
        var echo = (JsonObject)body.DeepClone();
        echo["prompt"] = job.Prompt;
        echo["negative_prompt"] = job.NegativePrompt;
        echo["seed"] = job.Seed;
        echo["sampler_name"] = job.Sampler;
        echo["scheduler"] = job.Scheduler;
        echo["steps"] = job.Steps;
        echo["cfg_scale"] = job.CfgScale;
        echo["width"] = job.Width;
        echo["height"] = job.Height;
        echo["batch_size"] = job.BatchSize;
        echo["n_iter"] = job.NIter;
        if (img2img) echo["denoising_strength"] = job.Strength;
        return echo;
    }

    /// <summary>A1111's <c>Processed.js()</c>: the fields clients read (seed, all_seeds, width, height, infotexts...).</summary>
    private static Dictionary<string, object?> Info(GenerationJobRequest job, GenerationJobResult result, DateTime started, bool img2img)
    {
        var seeds = result.Images.Select(i => i.Seed).ToList();
        var count = result.Images.Count;
        return new Dictionary<string, object?>
        {
            ["prompt"] = job.Prompt,
            ["all_prompts"] = Enumerable.Repeat(job.Prompt, count).ToList(),
            ["negative_prompt"] = job.NegativePrompt,
            ["all_negative_prompts"] = Enumerable.Repeat(job.NegativePrompt, count).ToList(),
            ["seed"] = seeds.FirstOrDefault(),
            ["all_seeds"] = seeds,
            ["subseed"] = -1,
            ["all_subseeds"] = Enumerable.Repeat(-1, count).ToList(),
            ["subseed_strength"] = 0,
            ["width"] = result.Width,
            ["height"] = result.Height,
            ["sampler_name"] = result.Sampler,
            ["cfg_scale"] = job.CfgScale,
            ["steps"] = job.Steps,
            ["batch_size"] = job.BatchSize,
            ["restore_faces"] = false,
            ["face_restoration_model"] = null,
            ["sd_model_name"] = result.Model,
            ["sd_model_hash"] = result.ModelHash,
            ["sd_vae_name"] = result.VaeName,
            ["sd_vae_hash"] = result.VaeHash,
            ["seed_resize_from_w"] = -1,
            ["seed_resize_from_h"] = -1,
            ["denoising_strength"] = img2img ? job.Strength : null,
            ["extra_generation_params"] = new Dictionary<string, object>(),
            ["index_of_first_image"] = 0,
            ["infotexts"] = result.Images.Select(i => i.Infotext).ToList(),
            ["styles"] = Array.Empty<string>(),
            ["job_timestamp"] = started.ToString("yyyyMMddHHmmss", CultureInfo.InvariantCulture),
            ["clip_skip"] = job.ClipSkip,
            ["is_using_inpainting_conditioning"] = false,
            ["version"] = "SdAppliance",
            ["warnings"] = result.Warnings,
        };
    }
}
