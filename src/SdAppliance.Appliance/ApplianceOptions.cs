using SdAppliance.Appliance.Storage;

namespace SdAppliance.Appliance;

/// <summary>How the appliance is set up: where its data lives and what it may read besides.</summary>
public sealed class ApplianceOptions
{
    /// <summary>The data folder (models/, datasets/, runs/, outputs/, the database); <c>./data</c>, <c>SDAPP_DATA</c> or <c>--data</c>.</summary>
    public required string DataFolder { get; init; }

    /// <summary>The application root (the one holding <c>models/configs</c> and <c>models/demo</c>), or null outside one.</summary>
    public string? ApplicationRoot { get; init; }

    /// <summary>Server folders a model may be imported from by path; nothing outside them (or the data folder) is read.</summary>
    public IReadOnlyList<string> ImportRoots { get; init; } = [];

    /// <summary>The devices jobs run on ("cpu", "cuda:0", ...); one GPU-heavy job at a time on each. Empty: the engine's devices.</summary>
    public IReadOnlyList<string> Devices { get; init; } = [];

    /// <summary>
    /// The program and arguments that run <c>sdapp train</c> (<c>sdapp serve</c> gives its own), with which a training job on
    /// several devices starts its ranks; empty: such jobs are refused.
    /// </summary>
    public IReadOnlyList<string> TrainingCommand { get; init; } = [];

    /// <summary>Upload limits (sizes, counts).</summary>
    public StorageLimits Limits { get; init; } = new();
}
