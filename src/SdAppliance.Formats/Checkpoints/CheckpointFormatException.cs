namespace SdAppliance.Formats.Checkpoints;

/// <summary>
/// A PyTorch checkpoint (.ckpt/.pt/.bin) is damaged, truncated, of an unsupported kind, or
/// inconsistent with itself. The message names the file and the problem.
/// </summary>
public sealed class CheckpointFormatException : UserInputException
{
    /// <summary>Creates the exception for <paramref name="filePath"/> with a human-readable <paramref name="problem"/>.</summary>
    public CheckpointFormatException(string filePath, string problem, Exception? inner = null)
        : base($"Cannot read PyTorch checkpoint '{filePath}': {problem}", filePath, problem, null, inner) => FilePath = filePath;

    /// <summary>The file.</summary>
    public string FilePath { get; }
}
