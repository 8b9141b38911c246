using System.Text;
using SdAppliance.Diffusion.Prompts;
using SdAppliance.Formats;

namespace SdAppliance.Training.Data;

/// <summary>
/// Caption files and captions that would hang, exhaust or stop a run, found when the dataset is scanned so that
/// their image is skipped with the reason (and the run goes on with the others) instead of failing at some step.
/// </summary>
public static class CaptionCheck
{
    /// <summary>
    /// 64 KiB: thirty times the longest real captions (booru tag lists of one or two kilobytes), and far more than
    /// <see cref="PromptChunker.MaxChunks"/> chunks can hold; a caption file above it is not read at all (a link to
    /// /dev/zero once ended a scan in an OutOfMemoryException).
    /// </summary>
    public const int MaxCaptionBytes = 64 << 10;

    // A chunk holds at least 55 tokens (A1111 moves at most the last 20 after a comma to the next one), and a
    // token covers at least one byte of text that is not white space.
    private const int MinTokensPerChunk = 55;

    /// <summary>The caption of <paramref name="captionPath"/> (<see cref="Captions.Read"/>), once the file is known to be a regular file of sane size.</summary>
    /// <exception cref="DatasetException">Not a regular file, or over <see cref="MaxCaptionBytes"/>.</exception>
    public static string Read(string captionPath)
    {
        var name = Path.GetFileName(captionPath);
        if (FileKind.NotRegular(captionPath) is { } kind)
            throw new DatasetException($"its caption file '{name}' {kind}");
        var length = new FileInfo(captionPath).Length;
        if (length > MaxCaptionBytes)
            throw new DatasetException($"its caption file '{name}' is {length:N0} bytes, over the {MaxCaptionBytes:N0} a caption may have");
        return Captions.Read(captionPath);
    }

    /// <summary>Why <paramref name="caption"/> cannot be trained on (it does not parse, a weight is not finite, it needs too many chunks), or null.</summary>
    public static string? Problem(string caption)
    {
        List<WeightedText> runs;
        try
        {
            runs = PromptAttention.Parse(caption);
        }
        catch (UserInputException e)
        {
            return $"its caption does not parse: {e.Problem}";
        }
        if (runs.FirstOrDefault(r => !double.IsFinite(r.Weight)) is { Text: not null } bad)
            return $"its caption's weights multiply to {(double.IsNaN(bad.Weight) ? "NaN" : bad.Weight > 0 ? "infinity" : "-infinity")} for '{Shorten(bad.Text)}' (brackets nested too deep, or a weight too large)";
        var chunks = 0;
        var bytes = 0;
        foreach (var run in runs.Append(new WeightedText(WeightedText.BreakText, -1)))
        {
            if (run.IsBreak)
            {
                chunks += Math.Max(1, (bytes + MinTokensPerChunk - 1) / MinTokensPerChunk);
                bytes = 0;
            }
            else
            {
                bytes += Encoding.UTF8.GetByteCount(string.Concat(run.Text.Where(c => !char.IsWhiteSpace(c))));
            }
        }
        return chunks > PromptChunker.MaxChunks
            ? $"its caption may need {chunks} chunks of 75 tokens (counting each BREAK as a new chunk), more than the {PromptChunker.MaxChunks} a prompt may have"
            : null;
    }

    private static string Shorten(string text) => text.Length > 40 ? text[..37] + "..." : text;
}
