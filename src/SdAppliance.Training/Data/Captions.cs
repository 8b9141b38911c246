using System.Text;

namespace SdAppliance.Training.Data;

/// <summary>Caption files and the caption augmentations of kohya's sd-scripts (<c>process_caption</c>).</summary>
public static class Captions
{
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>The caption file of an image: same path, extension replaced (kohya's <c>splitext(path)[0] + ext</c>).</summary>
    public static string CaptionPath(string imagePath, string captionExtension) =>
        System.IO.Path.ChangeExtension(imagePath, null) + captionExtension;

    /// <summary>
    /// The caption of a caption file: its first line, trimmed, as kohya reads it (its later lines are only used by
    /// kohya's wildcard mode). An empty file gives the empty caption. Text that is not UTF-8 throws
    /// <see cref="DecoderFallbackException"/>, as kohya refuses it.
    /// </summary>
    public static string Read(string captionPath)
    {
        var text = StrictUtf8.GetString(File.ReadAllBytes(captionPath));
        if (text.Length > 0 && text[0] == '\uFEFF') text = text[1..];
        int end = text.IndexOfAny(['\r', '\n']);
        return (end < 0 ? text : text[..end]).Trim();
    }

    /// <summary>
    /// kohya's caption augmentations in its order: with probability <paramref name="dropoutRate"/> the whole
    /// caption becomes ""; otherwise, when shuffling, the caption is split at commas, each tag trimmed, the first
    /// <paramref name="keepTokens"/> tags kept in place, the rest shuffled, and all joined with ", ".
    /// Without shuffling the caption is returned as is (kohya does not re-join it then).
    /// </summary>
    internal static string Process(string caption, bool shuffle, int keepTokens, double dropoutRate, DataRandom random)
    {
        if (dropoutRate > 0 && random.NextDouble() < dropoutRate) return "";
        if (!shuffle) return caption;
        var tokens = caption.Trim().Split(',').Select(t => t.Trim()).ToList();
        int keep = Math.Min(Math.Max(keepTokens, 0), tokens.Count);
        var flex = tokens.GetRange(keep, tokens.Count - keep);
        random.Shuffle(flex);
        return string.Join(", ", tokens.Take(keep).Concat(flex));
    }
}
