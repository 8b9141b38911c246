using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http.Timeouts;
using SdAppliance.Appliance.Catalog;
using SdAppliance.Appliance.Generation;
using SdAppliance.Formats;
using SdAppliance.Web.Security;

namespace SdAppliance.Web.A1111;

/// <summary>
/// The A1111-compatible API at the host root (<c>/sdapi/v1/...</c>: SillyTavern replaces the URL's path, so no prefix),
/// with A1111's field names, defaults and error shape; generations go through the job queue. What the API serves and
/// which clients need it: ../shared/reference/A1111-API.md.
/// </summary>
public static class A1111Api
{
    public static WebApplicationBuilder AddA1111Api(this WebApplicationBuilder builder) => builder;

    public static WebApplication MapA1111Api(this WebApplication app)
    {
        // A generation answers when its images exist, which may be long behind a training run: no request timeout.
        var api = app.MapGroup("/sdapi/v1");
        api.AddEndpointFilter(A1111Errors.Filter).DisableRequestTimeout();

        api.MapPost("/txt2img", A1111Generation.Txt2ImgAsync);
        api.MapPost("/img2img", A1111Generation.Img2ImgAsync);
        api.MapPost("/png-info", PngInfoAsync);
        api.MapGet("/progress", ProgressAsync);
        api.MapPost("/interrupt", async (HttpContext http, GenerationJobs jobs, CancellationToken ct) =>
        {
            await jobs.InterruptAsync(http.User.ToCaller(), ct);
            return Results.Json(new { });
        });
        // A1111 skips to the next image of a batch; a job here is one pass, so skipping stops it as interrupt does.
        api.MapPost("/skip", async (HttpContext http, GenerationJobs jobs, CancellationToken ct) =>
        {
            await jobs.InterruptAsync(http.User.ToCaller(), ct);
            return Null();
        });
        api.MapGet("/options", OptionsAsync);
        api.MapPost("/options", SetOptionsAsync);
        api.MapGet("/sd-models", async (HttpContext http, ModelCatalog catalog, CancellationToken ct) =>
            (await catalog.ListAsync(http.User.ToCaller(), ModelKind.Checkpoint, ct)).Where(m => m.Problem is null).Select(m => new
            {
                title = m.Title, model_name = m.Name, hash = m.ShortHash, sha256 = m.Sha256, filename = m.Path, config = (string?)null,
            }));
        api.MapGet("/samplers", () => SamplerNames.BaseSamplers.Select(s => new
        {
            name = s.DisplayName, aliases = (string[])[s.Id, .. s.Aliases], options = new Dictionary<string, string>(),
        }));
        api.MapGet("/schedulers", () => SamplerNames.ScheduleTypes.Select(t => new
        {
            name = t.Name, label = t.Label, aliases = t.Aliases.Count == 0 ? null : t.Aliases, default_rho = t.DefaultRho, need_inner_model = false,
        }));
        api.MapGet("/loras", async (HttpContext http, ModelCatalog catalog, CancellationToken ct) =>
            (await catalog.ListAsync(http.User.ToCaller(), ModelKind.Lora, ct)).Where(l => l.Problem is null)
                .Select(l => new { name = l.Name, alias = l.Metadata.GetValueOrDefault("ss_output_name") ?? l.Name, path = l.Path, metadata = l.Metadata }));
        api.MapGet("/embeddings", EmbeddingsAsync);
        api.MapGet("/scripts", () => new { txt2img = Array.Empty<string>(), img2img = Array.Empty<string>() });

        // A1111's list of models/VAE: each VAE's sd_vae name and file.
        api.MapGet("/sd-vae", (VaeCatalog vaes) => vaes.List().Select(v => new { model_name = v.Name, filename = v.Path }));
        // What the appliance has none of (upscalers, face restorers...): empty, so clients' panels fill.
        foreach (var empty in (string[])["upscalers", "latent-upscale-modes", "sd-modules", "hypernetworks", "face-restorers",
                     "realesrgan-models", "prompt-styles", "script-info", "extensions"])
            api.MapGet("/" + empty, () => Array.Empty<object>());
        api.MapGet("/cmd-flags", () => new Dictionary<string, object>());
        api.MapGet("/memory", () => new Dictionary<string, object>());
        // The catalog sees files as they come and loads models when a job needs them: nothing to refresh or unload.
        foreach (var noop in (string[])["refresh-checkpoints", "refresh-vae", "refresh-embeddings", "refresh-loras", "unload-checkpoint", "reload-checkpoint"])
            api.MapPost("/" + noop, Null);
        return app;
    }

    /// <summary>
    /// A1111's embeddings, all under <c>loaded</c>: which fit the model is told when a prompt uses one (the generation
    /// warns about one made for another family), as the catalog does not load text encoders to list files.
    /// </summary>
    private static async Task<IResult> EmbeddingsAsync(HttpContext http, ModelCatalog catalog, CancellationToken cancellationToken)
    {
        var embeddings = await catalog.ListAsync(http.User.ToCaller(), ModelKind.Embedding, cancellationToken);
        return Results.Json(new
        {
            loaded = embeddings.Where(e => e.Problem is null).ToDictionary(e => e.Name, e => new
            {
                step = (int?)null, sd_checkpoint = (string?)null, sd_checkpoint_name = (string?)null, shape = e.Dimension, vectors = e.Vectors,
            }),
            skipped = new Dictionary<string, object>(),
        });
    }

    private static IResult Null() => Results.Content("null", "application/json");

    private static async Task<IResult> PngInfoAsync(HttpRequest request, CancellationToken cancellationToken)
    {
        var body = await A1111Errors.ReadObjectAsync(request, cancellationToken);
        var image = body["image"] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
        if (string.IsNullOrWhiteSpace(image)) return Results.Json(new { info = "", items = new Dictionary<string, string>(), parameters = new Dictionary<string, string>() });
        return Results.Json(A1111Images.PngInfo(A1111Images.Decode(image, "image")));
    }

    /// <summary>
    /// The caller's generations: <c>progress</c> and the sampler steps of the running one, <c>job_count</c> running and
    /// queued. Idle reads exactly 0 and 0, which is what clients poll for after switching the model.
    /// </summary>
    private static async Task<IResult> ProgressAsync(HttpContext http, GenerationJobs jobs, CancellationToken cancellationToken)
    {
        var caller = http.User.ToCaller();
        var running = await jobs.RunningAsync(caller, cancellationToken);
        var queued = await jobs.QueuedAsync(caller, cancellationToken);
        var current = running.OrderBy(j => j.StartedUtc).FirstOrDefault();
        var progress = current is { TotalSteps: > 0 } ? (double)current.Step / current.TotalSteps : 0;
        var elapsed = current?.StartedUtc is { } started ? (DateTime.UtcNow - started).TotalSeconds : 0;
        return Results.Json(new
        {
            progress,
            eta_relative = progress > 0 ? elapsed / progress - elapsed : 0,
            state = new
            {
                skipped = false,
                interrupted = false,
                stopping_generation = false,
                job = current is null ? "" : current.Id.ToString(),
                job_count = running.Count + queued.Count,
                job_timestamp = current?.StartedUtc?.ToString("yyyyMMddHHmmss", System.Globalization.CultureInfo.InvariantCulture) ?? "0",
                job_no = 0,
                sampling_step = current?.Step ?? 0,
                sampling_steps = current?.TotalSteps ?? 0,
            },
            current_image = (string?)null,
            textinfo = (string?)null,
            current_task = current?.Id.ToString(),
        });
    }

    /// <summary>
    /// The options clients read: the current model by title, and A1111's values for the settings that are fixed here
    /// (PNG output), and <c>sd_vae</c> as set (Automatic: the model's own). Clip skip is taken per request (<c>override_settings</c>).
    /// </summary>
    private static async Task<IResult> OptionsAsync(HttpContext http, GenerationService generation, CancellationToken cancellationToken)
    {
        var model = await generation.CurrentModelAsync(http.User.ToCaller(), cancellationToken);
        return Results.Json(new Dictionary<string, object?>
        {
            ["sd_model_checkpoint"] = model.Title,
            ["sd_checkpoint_hash"] = model.Sha256,
            ["CLIP_stop_at_last_layers"] = 1,
            ["sd_vae"] = await generation.CurrentVaeAsync(cancellationToken),
            ["samples_format"] = "png",
            ["eta_noise_seed_delta"] = 0,
            ["sd_lora"] = "None",
        });
    }

    /// <summary>
    /// Takes any subset of the options, the whole dict GET returned included: <c>sd_model_checkpoint</c> (a title, name or
    /// file name) switches the model, <c>sd_vae</c> (Automatic, None or a VAE's name in models/vae) the VAE; the rest is fixed
    /// here and ignored. An unknown model is A1111's RuntimeError (500), an unknown VAE too.
    /// </summary>
    private static async Task<IResult> SetOptionsAsync(HttpContext http, GenerationService generation, CancellationToken cancellationToken)
    {
        var body = await A1111Errors.ReadObjectAsync(http.Request, cancellationToken);
        if (body["sd_model_checkpoint"] is JsonValue v && v.TryGetValue<string>(out var name) && name.Length > 0)
        {
            try
            {
                await generation.SetCurrentModelAsync(http.User.ToCaller(), name, cancellationToken);
            }
            catch (UserInputException e)
            {
                throw new A1111Exception(StatusCodes.Status500InternalServerError, "RuntimeError", e.Problem);
            }
        }
        if (body["sd_vae"] is JsonValue vae && vae.TryGetValue<string>(out var vaeName))
        {
            try
            {
                await generation.SetVaeAsync(vaeName, cancellationToken);
            }
            catch (UserInputException e)
            {
                throw new A1111Exception(StatusCodes.Status500InternalServerError, "RuntimeError", e.Message);
            }
        }
        return Null();
    }
}
