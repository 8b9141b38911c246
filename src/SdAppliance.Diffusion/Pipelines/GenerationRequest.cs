using System.Globalization;
using SdAppliance.Diffusion.Schedulers;
using SdAppliance.Formats;
using SdAppliance.Imaging;
using SdAppliance.Torch;

namespace SdAppliance.Diffusion.Pipelines;

/// <summary>
/// What to generate, with A1111's defaults: 20 steps, CFG 7, DPM++ 2M Karras, the model's native
/// resolution (512 for SD 1.x, 768 for SD 2.x-v, 1024 for SDXL), a random seed. <see cref="Validate"/> holds the
/// rules; its refusals name the field by <see cref="FieldName"/> (<c>cfg_scale</c>), which front ends map to their own words.
/// </summary>
public sealed record GenerationRequest
{
    public string Prompt { get; init; } = "";
    public string NegativePrompt { get; init; } = "";

    /// <summary>-1 draws a random seed; image i of a batch uses Seed + i.</summary>
    public long Seed { get; init; } = -1;

    public int Steps { get; init; } = 20;

    /// <summary>An id (<c>dpmpp_2m_karras</c>), an A1111 name ("DPM++ 2M Karras") or a diffusers class name.</summary>
    public string Sampler { get; init; } = "DPM++ 2M Karras";

    /// <summary>
    /// At 1 or below there is no unconditional batch and the negative prompt is not used (diffusers'
    /// <c>guidance_scale &gt; 1</c>); a UNet with <c>time_cond_proj_dim</c> (LCM) takes it as an embedding instead.
    /// </summary>
    public double CfgScale { get; init; } = 7;

    /// <summary>
    /// The sampler's <c>timestep_spacing</c> (<c>leading</c>, <c>trailing</c>, <c>linspace</c>) in place of the model's
    /// <c>scheduler_config.json</c>; null keeps the model's. Turbo models are sampled <c>trailing</c>.
    /// </summary>
    public string? TimestepSpacing { get; init; }

    /// <summary>What <see cref="TimestepSpacing"/> may be.</summary>
    public static IReadOnlyList<string> TimestepSpacings { get; } = ["leading", "trailing", "linspace"];
    public int? Width { get; init; }
    public int? Height { get; init; }
    public int BatchSize { get; init; } = 1;

    /// <summary>A1111 numbering: 1 = the last layer, 2 = the penultimate; applied to the prompt and the negative prompt.</summary>
    public int ClipSkip { get; init; } = 1;

    /// <summary>img2img: the image to start from, and how much of the schedule to run on it (0..1).</summary>
    public RgbImage? InitImage { get; init; }

    public double Strength { get; init; } = 0.75;

    /// <summary>
    /// SDXL micro-conditioning (diffusers' <c>original_size</c>, <c>crops_coords_top_left</c>, <c>target_size</c> and their
    /// <c>negative_*</c> twins); null takes diffusers' default (the generated size, (0, 0), the generated size; a negative
    /// one takes its positive twin's value). Only SDXL reads them: <see cref="CheckMicroConditioningApplies"/>.
    /// </summary>
    public ConditioningSize? OriginalSize { get; init; }

    public CropTopLeft? CropsCoordsTopLeft { get; init; }
    public ConditioningSize? TargetSize { get; init; }
    public ConditioningSize? NegativeOriginalSize { get; init; }
    public CropTopLeft? NegativeCropsCoordsTopLeft { get; init; }
    public ConditioningSize? NegativeTargetSize { get; init; }

    /// <summary>The micro-conditioning of the prompt's half of the batch at <paramref name="width"/> × <paramref name="height"/>.</summary>
    public MicroConditioning Conditioning(int width, int height)
    {
        var d = MicroConditioning.Default(width, height);
        return new(OriginalSize ?? d.OriginalSize, CropsCoordsTopLeft ?? d.CropsCoordsTopLeft, TargetSize ?? d.TargetSize);
    }

    /// <summary>The negative prompt's half: each value not given is the prompt's (diffusers: <c>negative_original_size or original_size</c>).</summary>
    public MicroConditioning NegativeConditioning(int width, int height)
    {
        var c = Conditioning(width, height);
        return new(NegativeOriginalSize ?? c.OriginalSize, NegativeCropsCoordsTopLeft ?? c.CropsCoordsTopLeft, NegativeTargetSize ?? c.TargetSize);
    }

    /// <summary>
    /// Where the SDXL refiner takes over, as a fraction of the schedule (A1111's "Refiner switch at"): the base runs diffusers'
    /// <c>denoising_end</c> = this, the refiner <c>denoising_start</c> = this, from the base's latents without new noise.
    /// Null: no hand-off. It needs a refiner (<see cref="StableDiffusionPipeline.Refiner"/>).
    /// </summary>
    public double? RefinerSwitchAt { get; init; }

    /// <summary>A1111's default "Refiner switch at".</summary>
    public const double DefaultRefinerSwitchAt = 0.8;

    /// <summary>The refiner's aesthetic score for the prompt (diffusers' <c>aesthetic_score</c>, default 6) and the negative prompt (2.5).</summary>
    public double AestheticScore { get; init; } = 6.0;

    public double NegativeAestheticScore { get; init; } = 2.5;

    /// <summary>
    /// Refuses micro-conditioning for a model that is not SDXL: its UNet has no input for it, and ignoring what was asked
    /// would draw something else than asked without saying so.
    /// </summary>
    /// <exception cref="GenerationRequestException">naming the first micro-conditioning field given.</exception>
    public void CheckMicroConditioningApplies(bool isSdxl, string modelName)
    {
        if (isSdxl) return;
        var given = new (string Property, bool Given)[]
        {
            (nameof(OriginalSize), OriginalSize is not null), (nameof(CropsCoordsTopLeft), CropsCoordsTopLeft is not null), (nameof(TargetSize), TargetSize is not null),
            (nameof(NegativeOriginalSize), NegativeOriginalSize is not null), (nameof(NegativeCropsCoordsTopLeft), NegativeCropsCoordsTopLeft is not null),
            (nameof(NegativeTargetSize), NegativeTargetSize is not null),
        }.FirstOrDefault(f => f.Given).Property;
        if (given is null) return;
        throw new GenerationRequestException(FieldName(given), $"is SDXL micro-conditioning, and {modelName} is not an SDXL model (its UNet has no input for it)",
            "leave it out, or generate with an SDXL model");
    }

    /// <summary>LoRA files to apply besides those named in the prompt with <c>&lt;lora:name:weight&gt;</c>.</summary>
    public IReadOnlyList<(string Path, double Weight)> Loras { get; init; } = [];

    /// <summary>The name a refusal gives a property: snake_case, as a JSON request spells it (<c>CfgScale</c> is <c>cfg_scale</c>).</summary>
    public static string FieldName(string property) => System.Text.Json.JsonNamingPolicy.SnakeCaseLower.ConvertName(property);

    /// <summary>
    /// Refuses what no model can generate, before any model is loaded: counts below 1, a non-finite CFG scale, sizes that
    /// are not positive multiples of 8 (every Stable Diffusion VAE downsamples by 8; the pipeline checks the model's own
    /// factor again), a strength outside (0, 1], an unknown sampler, a LoRA file that is not there or a non-finite weight.
    /// </summary>
    /// <exception cref="GenerationRequestException">naming the field at fault.</exception>
    public void Validate()
    {
        if (Steps < 1) throw Refuse(nameof(Steps), $"must be at least 1, got {Steps}");
        if (!double.IsFinite(CfgScale)) throw Refuse(nameof(CfgScale), $"must be a finite number, got {Format(CfgScale)}");
        if (BatchSize < 1) throw Refuse(nameof(BatchSize), $"must be at least 1, got {BatchSize}");
        if (ClipSkip < 1) throw Refuse(nameof(ClipSkip), $"counts from 1 (the last layer), got {ClipSkip}");
        CheckSize(nameof(Width), Width);
        CheckSize(nameof(Height), Height);
        if (Strength is <= 0 or > 1 || double.IsNaN(Strength)) throw Refuse(nameof(Strength), $"must be in (0, 1], got {Format(Strength)}");
        if (InitImage is not null) CheckImageToImageSteps(Steps, Strength);
        foreach (var (property, size) in new[] { (nameof(OriginalSize), OriginalSize), (nameof(TargetSize), TargetSize), (nameof(NegativeOriginalSize), NegativeOriginalSize), (nameof(NegativeTargetSize), NegativeTargetSize) })
            if (size is { } s && (s.Height < 1 || s.Width < 1)) throw Refuse(property, $"is (height, width) in pixels, each at least 1, got ({s.Height}, {s.Width})");
        foreach (var (property, crop) in new[] { (nameof(CropsCoordsTopLeft), CropsCoordsTopLeft), (nameof(NegativeCropsCoordsTopLeft), NegativeCropsCoordsTopLeft) })
            if (crop is { } c && (c.Top < 0 || c.Left < 0)) throw Refuse(property, $"is (top, left) in pixels, each at least 0, got ({c.Top}, {c.Left})");
        if (RefinerSwitchAt is { } switchAt && !(switchAt > 0 && switchAt < 1))
            throw new GenerationRequestException(FieldName(nameof(RefinerSwitchAt)), $"is the fraction of the steps after which the refiner takes over, strictly between 0 and 1, got {Format(switchAt)}",
                $"give e.g. {Format(DefaultRefinerSwitchAt)}, or no refiner");
        foreach (var (property, score) in new[] { (nameof(AestheticScore), AestheticScore), (nameof(NegativeAestheticScore), NegativeAestheticScore) })
            if (!double.IsFinite(score)) throw Refuse(property, $"must be a finite number, got {Format(score)}");
        if (TimestepSpacing is { } spacing && !TimestepSpacings.Contains(spacing))
            throw Refuse(nameof(TimestepSpacing), $"'{spacing}' is not one of {string.Join(", ", TimestepSpacings)}");
        if (!SchedulerRegistry.IsKnown(Sampler))
            throw new GenerationRequestException(FieldName(nameof(Sampler)), SchedulerRegistry.UnknownSampler(Sampler).Problem);
        foreach (var (path, weight) in Loras)
        {
            if (!File.Exists(path)) throw Refuse(nameof(Loras), $"the file '{path}' does not exist");
            if (!double.IsFinite(weight)) throw Refuse(nameof(Loras), $"the weight of '{path}' must be a finite number, got {Format(weight)}");
        }
    }

    /// <summary>
    /// img2img runs the last int(steps × strength) steps of the schedule (diffusers' rule); when that is none, there is
    /// nothing to run, so the request is refused rather than answered with the init image.
    /// </summary>
    public static void CheckImageToImageSteps(int steps, double strength)
    {
        if ((int)(steps * strength) < 1)
            throw new GenerationRequestException(FieldName(nameof(Strength)),
                $"with {steps} steps a strength of {Format(strength)} runs no step (img2img runs steps × strength of them)",
                "raise the steps or the strength so that steps × strength is at least 1");
    }

    private static void CheckSize(string property, int? size)
    {
        if (size is { } s && (s <= 0 || s % 8 != 0)) throw Refuse(property, $"must be a positive multiple of 8 (the VAE works on multiples of 8 pixels), got {s}");
    }

    private static GenerationRequestException Refuse(string property, string problem) => new(FieldName(property), problem);

    private static string Format(double value) => value.ToString(CultureInfo.InvariantCulture);
}

/// <summary>A field of a <see cref="GenerationRequest"/> that cannot be used; <see cref="UserInputException.Subject"/> is its name.</summary>
public sealed class GenerationRequestException(string field, string problem, string? fix = null) : UserInputException(field, problem, fix)
{
    /// <summary>The field at fault, as <see cref="GenerationRequest.FieldName"/> spells it.</summary>
    public string Field => Subject!;
}

/// <summary>One generated image with the seed it came from and its A1111 "parameters" text.</summary>
public sealed record GeneratedImage(RgbImage Image, long Seed, string Parameters);

/// <param name="Step">Sampler steps done (1-based), out of <paramref name="TotalSteps"/>.</param>
public sealed record GenerationProgress(int Step, int TotalSteps)
{
    /// <summary>
    /// Draws the current picture (<see cref="LatentPreview"/>, the first of the batch); call it during
    /// <see cref="IProgress{T}.Report"/> only, on the sampler's thread (the latents it reads change at the next step).
    /// Null when no sampler step is behind the report.
    /// </summary>
    public Func<RgbImage>? Preview { get; init; }

    /// <summary>
    /// The sampler's latents after this step, [batch, C, h, w] unscaled (what diffusers' <c>callback_on_step_end</c> gets);
    /// the pipeline's tensor, readable during <see cref="IProgress{T}.Report"/> only, as <see cref="Preview"/> (clone to keep it).
    /// </summary>
    public Tensor? Latents { get; init; }

    /// <summary>Which model ran this step: the model's own UNet, or the refiner's after the hand-off.</summary>
    public bool ByRefiner { get; init; }
}
