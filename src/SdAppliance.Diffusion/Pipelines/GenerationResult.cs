using System.Collections;

namespace SdAppliance.Diffusion.Pipelines;

/// <summary>
/// An adapter a generation could not apply, or applied only in part: a LoRA with layers that match nothing,
/// an embedding made for another model family, a tag of a kind we do not apply.
/// </summary>
/// <param name="Kind">"lora", "hypernet", "embedding", or the tag's kind for other tags.</param>
/// <param name="Name">The adapter's name as the prompt or the request gave it (a file name without extension).</param>
/// <param name="Problem">What was left out and why.</param>
public sealed record AdapterWarning(string Kind, string Name, string Problem)
{
    public override string ToString() => $"{Kind} {Name}: {Problem}";
}

/// <summary>The images of one generation and every adapter it skipped or applied only in part.</summary>
public sealed class GenerationResult(IReadOnlyList<GeneratedImage> images, IReadOnlyList<AdapterWarning> warnings) : IReadOnlyList<GeneratedImage>
{
    public IReadOnlyList<GeneratedImage> Images { get; } = images;

    public IReadOnlyList<AdapterWarning> Warnings { get; } = warnings;

    public GeneratedImage this[int index] => Images[index];

    public int Count => Images.Count;

    public IEnumerator<GeneratedImage> GetEnumerator() => Images.GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
}
