using System.Text.Json;

namespace SdAppliance.Appliance.Generation;

/// <summary>One image a generation job wrote: the PNG (relative to the data folder), its seed, its A1111 infotext.</summary>
public sealed record GeneratedFile(string File, long Seed, string Infotext);

/// <summary>What a generation job made, stored as its JSON result (<see cref="GenerationJobRequest.Json"/>).</summary>
/// <param name="Sampler">The sampler as the registry names it ("DPM++ 2M Karras"), after the schedule type was applied.</param>
/// <param name="Warnings">Adapters that were left out or applied in part, one line each.</param>
public sealed record GenerationJobResult(
    IReadOnlyList<GeneratedFile> Images, int Width, int Height, string Model, string? ModelHash, string Sampler,
    IReadOnlyList<string> Warnings)
{
    /// <summary>The engine that ran the networks (<c>libtorch</c> or <c>onnx</c>) and why it was chosen; null in results stored before it was recorded.</summary>
    public string? Backend { get; init; }

    public string? BackendReason { get; init; }

    /// <summary>The VAE used in place of the model's own (A1111's <c>sd_vae_name</c>, the file name) and its short hash (<c>sd_vae_hash</c>); null for the model's own.</summary>
    public string? VaeName { get; init; }

    public string? VaeHash { get; init; }

    public JsonElement ToJson() => JsonSerializer.SerializeToElement(this, GenerationJobRequest.Json);

    public static GenerationJobResult FromJson(JsonElement json) =>
        json.Deserialize<GenerationJobResult>(GenerationJobRequest.Json) ?? throw new JsonException("a generation result is null");
}
