using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Diffusion.Schedulers;

namespace SdAppliance.Appliance.Generation;

/// <summary>A schedule type A1111 (v1.9+) lists beside a sampler: its id, the label the UI shows, its aliases.</summary>
/// <param name="TimestepSpacing">The <c>timestep_spacing</c> it runs (null: the model's).</param>
public sealed record ScheduleType(string Name, string Label, IReadOnlyList<string> Aliases, double DefaultRho, string? TimestepSpacing = null);

/// <summary>A sampler of the registry (<see cref="SchedulerRegistry"/>) and the timestep spacing its schedule type asks for (null: the model's).</summary>
public sealed record ResolvedSampler(string Sampler, string? TimestepSpacing);

/// <summary>
/// Samplers as A1111 v1.9+ names them: a base name ("DPM++ 2M") and a schedule type ("Karras"), where older clients
/// say "DPM++ 2M Karras" in one name. <see cref="Resolve"/> turns either form into the registry's sampler
/// (<see cref="SchedulerRegistry"/>), which names the Karras variants on their own.
/// </summary>
public static class SamplerNames
{
    /// <summary>
    /// "Automatic": what the sampler name says (its own suffix, if any); "Normal": the model's timestep spacing, which
    /// is what a name without a suffix runs; "Karras": Karras sigmas, for the samplers that have them; "SGM Uniform":
    /// timesteps spaced evenly down from the last training one, which Turbo and other few-step models are sampled
    /// with. We run it as diffusers' <c>trailing</c> spacing (A1111 interpolates sigmas at linspace(999, 0, n + 1)[:-1],
    /// which it rounds to within a timestep: 999, 749, 499, 249 for 4 steps where A1111 has 749.25…).
    /// </summary>
    public static IReadOnlyList<ScheduleType> ScheduleTypes { get; } =
    [
        new("automatic", "Automatic", [], -1),
        new("normal", "Normal", [], -1),
        new("karras", "Karras", [], 7),
        new("sgm_uniform", "SGM Uniform", ["SGMUniform"], -1, "trailing"),
    ];

    /// <summary>The schedule type that runs <paramref name="timestepSpacing"/> (<c>trailing</c>: SGM Uniform); null for none.</summary>
    public static string? ScheduleTypeFor(string? timestepSpacing) =>
        timestepSpacing is null ? null : ScheduleTypes.FirstOrDefault(t => t.TimestepSpacing == timestepSpacing)?.Name;

    /// <summary>Whether <paramref name="scheduler"/> leaves the schedule to the sampler name and the model: empty or "automatic".</summary>
    public static bool IsAutomatic(string? scheduler) =>
        string.IsNullOrWhiteSpace(scheduler) || string.Equals(scheduler.Trim(), "automatic", StringComparison.OrdinalIgnoreCase);

    private const string KarrasSuffix = " Karras";

    /// <summary>The samplers under their A1111 base names (no "... Karras"), with every other spelling as an alias.</summary>
    public static IReadOnlyList<SamplerInfo> BaseSamplers { get; } =
        [.. SchedulerRegistry.Samplers.Where(s => !s.DisplayName.EndsWith(KarrasSuffix, StringComparison.Ordinal))];

    /// <summary>
    /// The registry's sampler for an A1111 sampler name and schedule type. A combined name ("DPM++ 2M Karras") keeps its
    /// suffix when the schedule type is empty or "automatic" (what the user meant, though A1111 1.10 would drop it for
    /// an explicit "automatic"); any other schedule type wins over the suffix, as in A1111.
    /// </summary>
    /// <exception cref="GenerationRequestException">naming <c>sampler</c> or <c>scheduler</c>, listing what is valid.</exception>
    public static ResolvedSampler Resolve(string sampler, string? scheduler)
    {
        if (!SchedulerRegistry.TryFind(sampler, out var info))
            throw new GenerationRequestException("sampler", SchedulerRegistry.UnknownSampler(sampler).Problem);
        if (IsAutomatic(scheduler)) return new(info.DisplayName, null);
        var type = ScheduleTypes.FirstOrDefault(t => t.Names().Any(n => string.Equals(n, scheduler!.Trim(), StringComparison.OrdinalIgnoreCase)))
            ?? throw new GenerationRequestException("scheduler",
                $"unknown schedule type '{scheduler}'; valid (case-insensitive): {string.Join(", ", ScheduleTypes.Select(t => $"{t.Name} (\"{t.Label}\")"))}");

        var baseName = info.DisplayName.EndsWith(KarrasSuffix, StringComparison.Ordinal) ? info.DisplayName[..^KarrasSuffix.Length] : info.DisplayName;
        if (type.Name != "karras") return new(baseName, type.TimestepSpacing);
        if (SchedulerRegistry.TryFind(baseName + KarrasSuffix, out var karras)) return new(karras.DisplayName, null);
        throw new GenerationRequestException("scheduler", $"{baseName} has no Karras schedule",
            $"use automatic, or one of the samplers that have one: {string.Join(", ", SchedulerRegistry.Samplers.Where(s => s.DisplayName.EndsWith(KarrasSuffix, StringComparison.Ordinal)).Select(s => s.DisplayName[..^KarrasSuffix.Length]))}");
    }

    private static IEnumerable<string> Names(this ScheduleType type) => [type.Name, type.Label, .. type.Aliases];
}
