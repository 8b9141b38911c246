using SdAppliance.Formats;

namespace SdAppliance.Diffusion.Prompts;

/// <summary>
/// A prompt (or caption) needs more than <see cref="PromptChunker.MaxChunks"/> chunks of 75 tokens. A1111 sets no
/// limit, but each chunk is one more text-encoder pass and 77 more keys in every cross-attention: a 160 KB
/// caption of BREAKs (27,000 chunks) took over 8 GB in one training step.
/// </summary>
public sealed class PromptTooLongException(int chunks)
    : UserInputException("prompt", $"needs more than {PromptChunker.MaxChunks} chunks of 75 tokens (it reached {chunks}, counting each BREAK as a new chunk)",
        $"shorten it to at most {PromptChunker.MaxChunks * 75} tokens")
{
    /// <summary>How many chunks the prompt had reached when it was refused.</summary>
    public int Chunks { get; } = chunks;
}
