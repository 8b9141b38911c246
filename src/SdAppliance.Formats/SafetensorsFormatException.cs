namespace SdAppliance.Formats;

/// <summary>
/// A safetensors file (or a set of tensors about to be written as one) breaks the format.
/// The message names the file and the problem; <see cref="Problem"/> holds the problem alone.
/// </summary>
public sealed class SafetensorsFormatException : UserInputException
{
    /// <summary>Creates the exception for <paramref name="filePath"/> with a human-readable <paramref name="problem"/>.</summary>
    public SafetensorsFormatException(string filePath, string problem, Exception? inner = null)
        : base($"Invalid safetensors file '{filePath}': {problem}", filePath, problem, null, inner) => FilePath = filePath;

    /// <summary>The file being read or written.</summary>
    public string FilePath { get; }
}
