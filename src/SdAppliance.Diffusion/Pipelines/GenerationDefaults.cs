using System.Text.Json.Nodes;
using SdAppliance.Diffusion.Prompts;
using SdAppliance.Formats;

namespace SdAppliance.Diffusion.Pipelines;

/// <summary>What a model was distilled for, which decides how it is sampled.</summary>
public enum FewStepKind
{
    /// <summary>An ordinary model: many steps with classifier-free guidance.</summary>
    None,

    /// <summary>SDXL Turbo, SD Turbo (adversarial diffusion distillation): 1-4 steps of Euler a, trailing, no guidance.</summary>
    Turbo,

    /// <summary>A latent consistency model: the LCM sampler, 4-8 steps.</summary>
    Lcm,

    /// <summary>An ordinary model with the LCM-LoRA applied: the LCM sampler, 4-8 steps, little guidance.</summary>
    LcmLora,
}

/// <summary>
/// The sampler, steps, CFG scale and timestep spacing a model is meant to be sampled with, told from its files alone, the
/// one home of these defaults for every front end (each fills in what its user left out with <see cref="ApplyTo"/>).
/// Nothing in a UNet's weights tells a Turbo model; as diffusers, the files around it do: a model's
/// <c>scheduler_config.json</c> (Turbo ships Euler a with <c>trailing</c> spacing, LCMs ship <c>LCMScheduler</c>), the UNet's
/// <c>time_cond_proj_dim</c> (an LCM distilled with its guidance as an input), and names (a single file has nothing else):
/// "turbo" or "lcm" in the file or folder name or in the <c>_name_or_path</c> diffusers writes into its configs.
/// </summary>
/// <param name="Reason">What in which file gave these defaults, for the user to see.</param>
public sealed record GenerationDefaults(FewStepKind Kind, string Sampler, int Steps, double CfgScale, string? TimestepSpacing, string Reason)
{
    private static readonly GenerationRequest Ordinary = new();

    /// <summary>A1111's defaults (<see cref="GenerationRequest"/>'s) for a model that is none of the few-step kinds.</summary>
    public static GenerationDefaults Standard { get; } = new(FewStepKind.None, Ordinary.Sampler, Ordinary.Steps, Ordinary.CfgScale, null, "an ordinary model");

    // SDXL Turbo's and SD Turbo's model cards: 1 step, guidance off (diffusers passes 0; every scale up to 1 is "off").
    private static GenerationDefaults Turbo(string reason) => new(FewStepKind.Turbo, "Euler a", 1, 1, "trailing", reason);

    // The LCM model cards (LCM_Dreamshaper_v7, lcm-sdxl): 4 steps at guidance 8, which such a UNet takes as an embedding
    // of w − 1 (it was distilled over a range of w), not as an unconditional batch.
    private static GenerationDefaults LcmWithEmbedding(string reason) => new(FewStepKind.Lcm, "LCM", 4, 8, null, reason);

    // An LCM without the embedding (an LCM-LoRA merged into a checkpoint): as the LoRA, guidance from a real batch, kept low.
    private static GenerationDefaults LcmMerged(string reason) => new(FewStepKind.Lcm, "LCM", 4, 1.5, null, reason);

    // The LCM-LoRA's model cards: 4 steps, guidance 1 (up to 2; higher burns).
    private static GenerationDefaults LcmLora(string reason) => new(FewStepKind.LcmLora, "LCM", 4, 1, null, reason);

    /// <summary>
    /// The defaults for the model at <paramref name="modelPath"/> (a diffusers or ONNX folder, or a single file) with the
    /// LoRAs that <paramref name="prompt"/> names in <c>&lt;lora:…&gt;</c> tags and those in <paramref name="loras"/> (names
    /// or paths): an LCM-LoRA among them makes an ordinary or Turbo model an LCM one.
    /// </summary>
    public static GenerationDefaults For(string modelPath, string prompt = "", IEnumerable<string>? loras = null)
    {
        var model = ForModel(modelPath);
        if (model.Kind == FewStepKind.Lcm) return model;
        var named = ExtraNetworkTags.Extract(prompt).Tags.Where(t => t.IsLora).Select(t => t.Name).Concat(loras ?? []);
        var lcmLora = named.FirstOrDefault(IsLcmLora);
        return lcmLora is null ? model : LcmLora($"the LoRA '{Path.GetFileNameWithoutExtension(lcmLora)}' is an LCM-LoRA (its name)");
    }

    /// <summary>The defaults for the model at <paramref name="modelPath"/> alone.</summary>
    public static GenerationDefaults ForModel(string modelPath)
    {
        var trimmed = Path.TrimEndingDirectorySeparator(modelPath);
        var name = Path.GetFileName(trimmed);
        if (!Directory.Exists(trimmed)) return FromName(name, $"the file name '{name}'") ?? Standard;

        var schedulerFile = Path.Combine(trimmed, "scheduler", "scheduler_config.json");
        var unetFile = Path.Combine(trimmed, "unet", "config.json");
        var scheduler = File.Exists(schedulerFile) ? JsonFiles.ReadObject(schedulerFile) : null;
        var unet = File.Exists(unetFile) ? JsonFiles.ReadObject(unetFile) : null;
        var schedulerClass = scheduler?["_class_name"]?.GetValue<string>();
        var condDim = unet?["time_cond_proj_dim"]?.GetValueKind() == System.Text.Json.JsonValueKind.Number ? unet["time_cond_proj_dim"]!.GetValue<int>() : (int?)null;
        if (condDim is { } dim)
            return LcmWithEmbedding($"unet/config.json has time_cond_proj_dim {dim} (a guidance embedding)");
        if (schedulerClass == "LCMScheduler")
            return LcmMerged("scheduler/scheduler_config.json names LCMScheduler");
        if (schedulerClass == "EulerAncestralDiscreteScheduler" && scheduler!["timestep_spacing"]?.GetValue<string>() == "trailing")
            return Turbo("scheduler/scheduler_config.json is Euler a with trailing timestep spacing (as SDXL Turbo and SD Turbo ship)");

        var modelIndexFile = Path.Combine(trimmed, "model_index.json");
        var origin = NameOrPath(File.Exists(modelIndexFile) ? JsonFiles.ReadObject(modelIndexFile) : null) ?? NameOrPath(unet);
        return FromName(name, $"the folder name '{name}'")
            ?? (origin is null ? null : FromName(origin, $"the _name_or_path '{origin}' in its configs"))
            ?? Standard;
    }

    /// <summary>Whether a LoRA (its name or path) is the LCM-LoRA: its files say nothing else, so by its name, as users keep it.</summary>
    public static bool IsLcmLora(string nameOrPath) => Contains(Path.GetFileNameWithoutExtension(nameOrPath), "lcm");

    /// <summary>
    /// <paramref name="request"/> with what its user left out (null) taken from these defaults: the sampler, the steps
    /// (for img2img enough to run one, see <see cref="StepsFor"/>), the CFG scale, and the timestep spacing unless the
    /// request has its own.
    /// </summary>
    public GenerationRequest ApplyTo(GenerationRequest request, string? sampler, int? steps, double? cfgScale, bool imageToImage) => request with
    {
        Sampler = sampler ?? Sampler,
        Steps = steps ?? StepsFor(imageToImage ? request.Strength : null),
        CfgScale = cfgScale ?? CfgScale,
        TimestepSpacing = request.TimestepSpacing ?? TimestepSpacing,
    };

    /// <summary>
    /// The steps for txt2img (<paramref name="img2imgStrength"/> null) or img2img, where only steps × strength of them run:
    /// at least enough for one (the Turbo model card: 2 steps at strength 0.5).
    /// </summary>
    public int StepsFor(double? img2imgStrength)
    {
        var steps = Steps;
        if (img2imgStrength is { } strength and > 0)
            while ((int)(steps * strength) < 1) steps++;
        return steps;
    }

    private static GenerationDefaults? FromName(string name, string where) =>
        Contains(name, "turbo") ? Turbo($"{where} says Turbo")
        : Contains(name, "lcm") ? LcmMerged($"{where} says LCM")
        : null;

    private static string? NameOrPath(JsonObject? config) =>
        config?["_name_or_path"]?.GetValueKind() == System.Text.Json.JsonValueKind.String ? config["_name_or_path"]!.GetValue<string>() : null;

    private static bool Contains(string name, string word) => name.Contains(word, StringComparison.OrdinalIgnoreCase);
}
