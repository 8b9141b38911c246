namespace SdAppliance.Imaging;

/// <summary>
/// An image file (or buffer) cannot be decoded or encoded: unknown format, corrupt or truncated data,
/// or a size over the configured pixel limit. The message names the file when it is known.
/// </summary>
public sealed class ImageFormatException : Exception
{
    /// <summary>Creates the exception for <paramref name="filePath"/> (null for data from memory).</summary>
    public ImageFormatException(string? filePath, string problem, Exception? inner = null)
        : base(filePath is null ? $"Invalid image: {problem}" : $"Invalid image '{filePath}': {problem}", inner)
    {
        FilePath = filePath;
        Problem = problem;
    }

    /// <summary>The file being read or written, or null when the data came from memory.</summary>
    public string? FilePath { get; }

    /// <summary>What is wrong, without the file name.</summary>
    public string Problem { get; }
}
