using SdAppliance.Formats.Hashing;
using System.Globalization;
using SdAppliance.Diffusion.Prompts;
using SdAppliance.Diffusion.Schedulers;
using SdAppliance.Formats.Adapters;
using SdAppliance.Imaging;
using SdAppliance.Models.Adapters;
using SdAppliance.Models.Loading;

namespace SdAppliance.Diffusion.Pipelines;

/// <summary>The embeddings a generation can use, and the file each came from (for its hash).</summary>
internal sealed record LoadedEmbeddings(EmbeddingLibrary Library) : IDisposable
{
    public Dictionary<string, string> Files { get; } = new(StringComparer.Ordinal);

    public void Dispose() => Library.Dispose();
}

/// <summary>
/// A generation's A1111 PNG info (FORMATS §4.7), written so that A1111's "PNG Info → txt2img" draws the same
/// picture: the prompt with every LoRA in it (a request's LoRA files become <c>&lt;lora:NAME:W&gt;</c> tags, as
/// A1111 would have them), the sampler by its A1111 name, and A1111's <c>Lora hashes</c> and <c>TI hashes</c>.
/// </summary>
internal sealed class Infotext
{
    private readonly A1111Parameters parameters;

    public Infotext(GenerationRequest request, IDiffusionModel model, string? modelHash, int width, int height,
        IReadOnlyList<LoraApplication> loras, LoadedEmbeddings embeddings, IReadOnlyList<AdapterWarning> warnings,
        (IDiffusionModel Model, string? Hash)? refiner = null)
    {
        var prompt = request.Prompt + string.Concat(request.Loras.Select(l => $" <lora:{Path.GetFileNameWithoutExtension(l.Path)}:{Number(l.Weight)}>"));
        var p = new A1111Parameters { Prompt = prompt, NegativePrompt = request.NegativePrompt };
        p.Add("Steps", request.Steps.ToString(CultureInfo.InvariantCulture));
        p.Add("Sampler", SamplerName(request.Sampler, model));
        p.Add("CFG scale", A1111Parameters.FormatFloat(request.CfgScale));
        p.Add("Seed", "");
        p.Add("Size", $"{width}x{height}");
        if (modelHash is not null) p.Add("Model hash", modelHash);
        p.Add("Model", model.Name);
        // A1111's order and names: "VAE hash" (the file's first 10 hex of SHA-256), then "VAE" (the file name, extension kept).
        if (model.VaePath is { } vae)
        {
            if (model.VaeHash is { } vaeHash) p.Add("VAE hash", vaeHash);
            p.Add("VAE", Path.GetFileName(Path.TrimEndingDirectorySeparator(vae)));
        }
        if (request.InitImage is not null) p.Add("Denoising strength", A1111Parameters.FormatFloat(request.Strength));
        if (request.ClipSkip > 1) p.Add("Clip skip", request.ClipSkip.ToString(CultureInfo.InvariantCulture));
        if (model.IsSdxl)
            foreach (var (key, value) in MicroConditioningInfotext.Settings(request, width, height)) p.Add(key, value);
        if (loras.Count > 0)
            p.Add("Lora hashes", string.Join(", ", loras.Select(l => $"{Alias(l.File.Name)}: {FileHashes.Uncached.LoraShortHash(l.File.Path, l.File.Metadata)}")));
        if (embeddings.Library.Used.Where(embeddings.Files.ContainsKey).ToList() is { Count: > 0 } used)
            p.Add("TI hashes", string.Join(", ", used.Select(n => $"{Alias(n)}: {FileHashes.Uncached.EmbeddingShortHash(embeddings.Files[n])}")));
        if (warnings.Count > 0) p.Add("Adapter warnings", string.Join("; ", warnings));
        if (refiner is var (refinerModel, refinerHash) && request.RefinerSwitchAt is { } switchAt)
        {
            // A1111's "Refiner: NAME [HASH], Refiner switch at: F".
            p.Add("Refiner", refinerHash is null ? refinerModel.Name : $"{refinerModel.Name} [{refinerHash}]");
            p.Add("Refiner switch at", A1111Parameters.FormatFloat(switchAt));
        }
        p.Add("Version", "SdAppliance");
        parameters = p;
    }

    /// <summary>The text for the image drawn from <paramref name="seed"/>.</summary>
    public string For(long seed)
    {
        parameters["Seed"] = seed.ToString(CultureInfo.InvariantCulture);
        return parameters.ToString();
    }

    /// <summary>
    /// A1111's name of the sampler: the registry's display name, and for a diffusers class name the sampler that
    /// class is with the model's scheduler config (Karras sigmas or not; PLMS when it skips PNDM's Runge-Kutta steps).
    /// </summary>
    internal static string SamplerName(string sampler, IDiffusionModel model)
    {
        if (SchedulerRegistry.TryFind(sampler, out var info)) return info.DisplayName;
        var config = SchedulerConfig.FromJson(model.SchedulerConfig.ToJsonString());
        var candidates = SchedulerRegistry.Samplers.Where(s => string.Equals(s.ClassName, sampler, StringComparison.OrdinalIgnoreCase)).ToList();
        var karras = config.UseKarrasSigmas ?? false;
        var plms = config.SkipPrkSteps ?? false;
        return candidates.FirstOrDefault(s => (s.Settings.UseKarrasSigmas ?? false) == karras && (s.Settings.SkipPrkSteps ?? false) == plms)?.DisplayName
            ?? candidates.FirstOrDefault()?.DisplayName
            ?? sampler;
    }

    // A1111 strips these from a name in its hash lists, where they would break the "name: hash, ..." syntax.
    private static string Alias(string name) => name.Replace(":", "", StringComparison.Ordinal).Replace(",", "", StringComparison.Ordinal);

    private static string Number(double value) => value.ToString("R", CultureInfo.InvariantCulture);
}
