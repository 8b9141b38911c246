using SdAppliance.Imaging;

namespace SdAppliance.Diffusion.Pipelines;

/// <summary>
/// What to generate, with A1111's defaults: 20 steps, CFG 7, DPM++ 2M Karras, the model's native
/// resolution (512 for SD 1.x, 768 for SD 2.x-v, 1024 for SDXL), a random seed.
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

    public double CfgScale { get; init; } = 7;
    public int? Width { get; init; }
    public int? Height { get; init; }
    public int BatchSize { get; init; } = 1;

    /// <summary>A1111 numbering: 1 = the last layer, 2 = the penultimate; applied to the prompt and the negative prompt.</summary>
    public int ClipSkip { get; init; } = 1;

    /// <summary>img2img: the image to start from, and how much of the schedule to run on it (0..1).</summary>
    public RgbImage? InitImage { get; init; }

    public double Strength { get; init; } = 0.75;

    /// <summary>LoRA files to apply besides those named in the prompt with <c>&lt;lora:name:weight&gt;</c>.</summary>
    public IReadOnlyList<(string Path, double Weight)> Loras { get; init; } = [];
}

/// <summary>One generated image with the seed it came from and its A1111 "parameters" text.</summary>
public sealed record GeneratedImage(RgbImage Image, long Seed, string Parameters);

/// <param name="Step">Sampler steps done (1-based), out of <paramref name="TotalSteps"/>.</param>
public sealed record GenerationProgress(int Step, int TotalSteps);
