using SdAppliance.Formats;

namespace SdAppliance.Diffusion.Schedulers;

/// <summary>A sampler users can name: its id, its A1111 display name, the diffusers class and the settings the name implies.</summary>
public sealed record SamplerInfo(string Id, string DisplayName, string ClassName, SchedulerConfig Settings, IReadOnlyList<string> Aliases)
{
    /// <summary>Every accepted spelling: id, display name, aliases.</summary>
    public IEnumerable<string> Names => new[] { Id, DisplayName }.Concat(Aliases);
}

/// <summary>
/// Samplers by name (<c>dpmpp_2m_karras</c>, "DPM++ 2M Karras", <c>k_euler_a</c>…, case-insensitive)
/// and by diffusers class name. As diffusers' <c>Class.from_config(config, **overrides)</c>, the
/// model's <c>scheduler_config.json</c> is the base (betas, timestep spacing, prediction type come
/// from it), the sampler name picks the class and adds the settings that define it (e.g. Karras
/// sigmas), and explicit overrides win over both.
/// </summary>
public static class SchedulerRegistry
{
    private static readonly SchedulerConfig None = new();

    public static IReadOnlyList<SamplerInfo> Samplers { get; } =
    [
        new("ddim", "DDIM", "DDIMScheduler", None, []),
        new("pndm", "PNDM", "PNDMScheduler", None, []),
        // A1111's PLMS is PNDM's linear multistep without the Runge-Kutta warm-up.
        new("plms", "PLMS", "PNDMScheduler", new() { SkipPrkSteps = true }, []),
        new("euler", "Euler", "EulerDiscreteScheduler", None, ["k_euler"]),
        new("euler_a", "Euler a", "EulerAncestralDiscreteScheduler", None, ["k_euler_a", "euler_ancestral"]),
        new("dpmpp_2m", "DPM++ 2M", "DPMSolverMultistepScheduler",
            new() { AlgorithmType = "dpmsolver++", SolverOrder = 2, UseKarrasSigmas = false }, ["k_dpmpp_2m"]),
        new("dpmpp_2m_karras", "DPM++ 2M Karras", "DPMSolverMultistepScheduler",
            new() { AlgorithmType = "dpmsolver++", SolverOrder = 2, UseKarrasSigmas = true }, ["k_dpmpp_2m_karras"]),
        new("dpmpp_sde", "DPM++ SDE", "DPMSolverSDEScheduler", new() { UseKarrasSigmas = false }, ["k_dpmpp_sde"]),
        new("dpmpp_sde_karras", "DPM++ SDE Karras", "DPMSolverSDEScheduler", new() { UseKarrasSigmas = true }, ["k_dpmpp_sde_karras"]),
        new("lms", "LMS", "LMSDiscreteScheduler", None, ["k_lms"]),
        new("lms_karras", "LMS Karras", "LMSDiscreteScheduler", new() { UseKarrasSigmas = true }, ["k_lms_karras"]),
        new("ddpm", "DDPM", "DDPMScheduler", None, []),
        new("unipc", "UniPC", "UniPCMultistepScheduler", None, []),
        new("lcm", "LCM", "LCMScheduler", None, []),
    ];

    /// <summary>The diffusers class names this registry builds.</summary>
    public static IReadOnlyList<string> ClassNames { get; } =
    [
        "DDIMScheduler", "PNDMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
        "DPMSolverMultistepScheduler", "DPMSolverSDEScheduler", "LMSDiscreteScheduler", "DDPMScheduler",
        "UniPCMultistepScheduler", "LCMScheduler",
    ];

    public static bool TryFind(string name, out SamplerInfo info)
    {
        var key = name.Trim();
        foreach (var s in Samplers)
        {
            if (s.Names.Any(n => string.Equals(n, key, StringComparison.OrdinalIgnoreCase)))
            {
                info = s;
                return true;
            }
        }
        info = null!;
        return false;
    }

    /// <summary>The sampler called <paramref name="name"/>, or a refusal of the field <c>sampler</c> that lists every valid name.</summary>
    public static SamplerInfo Find(string name) => TryFind(name, out var info) ? info : throw UnknownSampler(name);

    /// <summary>Whether <paramref name="name"/> is a sampler's id, A1111 name or alias, or a diffusers class name (any case).</summary>
    public static bool IsKnown(string name) => TryFind(name, out _) || FindClassName(name) is not null;

    /// <summary>The refusal of an unknown sampler name, listing every name this registry takes (the one text for every caller).</summary>
    public static UserInputException UnknownSampler(string name)
    {
        var valid = string.Join(", ", Samplers.Select(s => $"{s.Id} (\"{s.DisplayName}\"{string.Concat(s.Aliases.Select(a => ", " + a))})"));
        return new UserInputException("sampler",
            $"unknown sampler '{name}'; valid names (case-insensitive): {valid}; or a diffusers class name: {string.Join(", ", ClassNames)}");
    }

    private static string? FindClassName(string name) => ClassNames.FirstOrDefault(c => string.Equals(c, name.Trim(), StringComparison.OrdinalIgnoreCase));

    /// <summary>
    /// The sampler <paramref name="samplerName"/> built on the model's config; a diffusers class name
    /// is accepted too and uses the base config as it is.
    /// </summary>
    public static Scheduler Create(string samplerName, SchedulerConfig baseConfig, SchedulerConfig? overrides = null)
    {
        var className = FindClassName(samplerName);
        if (className is not null) return FromConfig(className, baseConfig, overrides);
        var info = Find(samplerName);
        return FromConfig(info.ClassName, baseConfig.With(info.Settings), overrides);
    }

    /// <summary>The class the config names in <c>_class_name</c>, built from it (a model's own scheduler).</summary>
    public static Scheduler FromConfig(SchedulerConfig config, SchedulerConfig? overrides = null) =>
        FromConfig(config.ClassName ?? throw new ArgumentException("the scheduler config has no _class_name", nameof(config)), config, overrides);

    /// <summary>diffusers' <c>ClassName.from_config(config, **overrides)</c>.</summary>
    public static Scheduler FromConfig(string className, SchedulerConfig config, SchedulerConfig? overrides = null)
    {
        var resolved = config.With(overrides) with { ClassName = className };
        return className switch
        {
            "DDIMScheduler" => new DdimScheduler(resolved),
            "PNDMScheduler" => new PndmScheduler(resolved),
            "EulerDiscreteScheduler" => new EulerDiscreteScheduler(resolved),
            "EulerAncestralDiscreteScheduler" => new EulerAncestralDiscreteScheduler(resolved),
            "DPMSolverMultistepScheduler" => new DpmSolverMultistepScheduler(resolved),
            "DPMSolverSDEScheduler" => new DpmSolverSdeScheduler(resolved),
            "LMSDiscreteScheduler" => new LmsDiscreteScheduler(resolved),
            "DDPMScheduler" => new DdpmScheduler(resolved),
            "UniPCMultistepScheduler" => new UniPCMultistepScheduler(resolved),
            "LCMScheduler" => new LcmScheduler(resolved),
            _ => throw new NotSupportedException($"scheduler class '{className}' is not supported ({string.Join(", ", ClassNames)})"),
        };
    }
}
