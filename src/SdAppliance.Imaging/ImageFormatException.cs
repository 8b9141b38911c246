using SdAppliance.Formats;

namespace SdAppliance.Imaging;

/// <summary>
/// An image file (or buffer) cannot be decoded or encoded: unknown format, corrupt or truncated data,
/// or a size over the configured pixel limit. The message names the file when it is known.
/// </summary>
public sealed class ImageFormatException : UserInputException
{
    /// <summary>Creates the exception for <paramref name="filePath"/> (null for data from memory).</summary>
    public ImageFormatException(string? filePath, string problem, Exception? inner = null)
        : base(filePath is null ? $"Invalid image: {problem}" : $"Invalid image '{filePath}': {problem}", filePath, problem, null, inner) => FilePath = filePath;

    /// <summary>The file being read or written, or null when the data came from memory.</summary>
    public string? FilePath { get; }
}
