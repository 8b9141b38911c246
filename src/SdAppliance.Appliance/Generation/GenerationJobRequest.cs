using System.Text.Json;
using SdAppliance.Diffusion.Pipelines;

namespace SdAppliance.Appliance.Generation;

/// <summary>A LoRA from the catalog (its name: the file name without extension) and its weight.</summary>
public sealed record LoraWeight(string Name, double Weight = 1);

/// <summary>
/// A generation job as it is queued and stored (JSON, snake_case: <c>cfg_scale</c>, <c>n_iter</c>, the names
/// <see cref="GenerationRequest.FieldName"/> gives refusals). A sampler, steps or CFG scale left out (null) is the model's
/// (<see cref="GenerationDefaults"/>: Turbo and LCM models have their own; others <c>sdapp generate</c>'s 20 steps, CFG 7,
/// DPM++ 2M Karras), filled in when the job is prepared; the size is the model's native one, the seed a random one.
/// </summary>
public sealed record GenerationJobRequest
{
    private static readonly GenerationRequest Defaults = new();

    /// <summary>A catalog model by A1111 title, name or file name; null: the appliance's current model.</summary>
    public string? Model { get; init; }

    public string Prompt { get; init; } = "";
    public string NegativePrompt { get; init; } = "";

    /// <summary>-1 draws one; image i of the job (over every batch) uses Seed + i, as A1111.</summary>
    public long Seed { get; init; } = -1;

    /// <summary>A sampler name ("DPM++ 2M", "DPM++ 2M Karras", <c>euler_a</c>...), see <see cref="SamplerNames.Resolve"/>; null: the model's.</summary>
    public string? Sampler { get; init; }

    /// <summary>
    /// A schedule type (automatic, normal, karras, sgm_uniform); null or automatic: the sampler name's own, on the model's
    /// timestep spacing (a Turbo model's is SGM Uniform's).
    /// </summary>
    public string? Scheduler { get; init; }

    /// <summary>Null: the model's.</summary>
    public int? Steps { get; init; }

    /// <summary>Null: the model's.</summary>
    public double? CfgScale { get; init; }

    /// <summary>Null: the init image's size, else the model's native size.</summary>
    public int? Width { get; init; }

    public int? Height { get; init; }
    public int BatchSize { get; init; } = 1;

    /// <summary>How many batches, one after the other (A1111's batch count).</summary>
    public int NIter { get; init; } = 1;

    public int ClipSkip { get; init; } = Defaults.ClipSkip;

    /// <summary>img2img: the image to start from, a file relative to the data folder (the service stores uploads there).</summary>
    public string? InitImage { get; init; }

    /// <summary>img2img: how much of the schedule runs on the init image (A1111's denoising strength).</summary>
    public double Strength { get; init; } = Defaults.Strength;

    /// <summary>
    /// What runs the networks: <c>libtorch</c>, <c>onnx</c> (the model's ONNX export on ONNX Runtime) or <c>auto</c>;
    /// null is auto (see <c>BackendChoice</c>).
    /// </summary>
    public string? Backend { get; init; }

    /// <summary>
    /// A VAE of the data folder's <c>models/vae/</c> by name (A1111's <c>sd_vae</c>: the file name), used in place of the
    /// model's own (the refiner's too); Automatic or None: the model's own; null: the appliance's <c>sd_vae</c> option.
    /// </summary>
    public string? Vae { get; init; }

    /// <summary>An SDXL refiner from the catalog (as <see cref="Model"/> is named) that finishes the images; null: none.</summary>
    public string? Refiner { get; init; }

    /// <summary>With <see cref="Refiner"/>: the fraction of the steps after which it takes over; null is A1111's 0.8.</summary>
    public double? RefinerSwitchAt { get; init; }

    /// <summary>
    /// SDXL micro-conditioning, each as diffusers' pair: sizes <c>[height, width]</c>, the crop <c>[top, left]</c>; null takes
    /// diffusers' default (the image's size, [0, 0]; a <c>negative_*</c> one its positive twin's). Refused for other models.
    /// </summary>
    public IReadOnlyList<int>? OriginalSize { get; init; }

    public IReadOnlyList<int>? CropsCoordsTopLeft { get; init; }
    public IReadOnlyList<int>? TargetSize { get; init; }
    public IReadOnlyList<int>? NegativeOriginalSize { get; init; }
    public IReadOnlyList<int>? NegativeCropsCoordsTopLeft { get; init; }
    public IReadOnlyList<int>? NegativeTargetSize { get; init; }

    /// <summary>LoRAs besides those the prompt names with <c>&lt;lora:name:w&gt;</c>.</summary>
    public IReadOnlyList<LoraWeight> Loras { get; init; } = [];

    /// <summary>How requests and results are spelt as JSON: snake_case.</summary>
    public static JsonSerializerOptions Json { get; } = new(JsonSerializerDefaults.Web) { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public JsonElement ToJson() => JsonSerializer.SerializeToElement(this, Json);

    public static GenerationJobRequest FromJson(JsonElement json) =>
        json.Deserialize<GenerationJobRequest>(Json) ?? throw new JsonException("a generation request is null");
}
