using System.Text;
using SdAppliance.Formats;
using SdAppliance.Imaging;

namespace SdAppliance.Onnx.Tagging;

/// <summary>The images of a dataset folder a tagger captions.</summary>
public static class DatasetImages
{
    /// <summary>The extensions training reads images by (kohya's repeat folders hold the same).</summary>
    public static readonly IReadOnlySet<string> Extensions = new HashSet<string>(StringComparer.OrdinalIgnoreCase) { ".png", ".jpg", ".jpeg", ".webp" };

    /// <summary>
    /// Every image under <paramref name="folder"/>, its sub-folders included (kohya's <c>10_name</c> repeat folders, class
    /// folders), in ordinal path order; hidden files and folders (uploads being staged, caches) are left out.
    /// </summary>
    public static IReadOnlyList<string> Find(string folder)
    {
        if (!Directory.Exists(folder))
            throw new UserInputException(folder, "is not a folder", "give the dataset folder (kohya's layout: images, or N_name folders of images)");
        var options = new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = FileAttributes.Hidden, IgnoreInaccessible = true };
        return [.. Directory.EnumerateFiles(folder, "*", options)
            .Where(f => Extensions.Contains(Path.GetExtension(f)))
            .Where(f => !Path.GetRelativePath(folder, f).Split(Path.DirectorySeparatorChar).Any(part => part.StartsWith('.')))
            .Order(StringComparer.Ordinal)];
    }
}

/// <summary>One image captioned: the caption written and the tags the tagger gave (with their scores).</summary>
/// <param name="Image">Relative to the dataset, with forward slashes.</param>
public sealed record CaptionedImage(string Image, string Caption, IReadOnlyList<ScoredTag> Tags);

/// <summary>One image left as it was, and why (it could not be read, it has a caption already, no tag passed the thresholds).</summary>
public sealed record SkippedImage(string Image, string Reason);

/// <summary>What captioning a dataset did.</summary>
public sealed record CaptioningResult(IReadOnlyList<CaptionedImage> Written, IReadOnlyList<SkippedImage> Skipped)
{
    public int Total => Written.Count + Skipped.Count;
}

/// <summary>How far captioning is: images done of the total, and the last one.</summary>
public readonly record struct CaptioningProgress(int Done, int Total, string Image);

/// <summary>
/// Captions every image of a dataset with a <see cref="WdTagger"/>: the caption file beside each image
/// (<c>a.png</c> → <c>a.txt</c>, kohya's <c>splitext(path)[0] + caption_extension</c>) written to a temporary name and
/// renamed. An image that cannot be read, has a caption already (<see cref="CaptionMode.Skip"/>) or gets no tag is
/// skipped with its reason; nothing stops the run but cancellation, which leaves every caption whole.
/// </summary>
public static class DatasetCaptioner
{
    public static CaptioningResult Caption(WdTagger tagger, string dataset, CaptionOptions options,
        IProgress<CaptioningProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(tagger);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var images = DatasetImages.Find(dataset);
        var written = new List<CaptionedImage>();
        var skipped = new List<SkippedImage>();
        var decode = new ImageDecodeOptions { Channels = ChannelMode.Rgb, Background = Rgb.White };
        for (var i = 0; i < images.Count; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var path = images[i];
            var relative = Path.GetRelativePath(dataset, path).Replace(Path.DirectorySeparatorChar, '/');
            var outcome = CaptionOne(tagger, path, relative, options, decode);
            if (outcome.Written is { } w) written.Add(w);
            else skipped.Add(outcome.Skipped!);
            progress?.Report(new CaptioningProgress(i + 1, images.Count, relative));
        }
        return new CaptioningResult(written, skipped);
    }

    private static (CaptionedImage? Written, SkippedImage? Skipped) CaptionOne(WdTagger tagger, string path, string relative, CaptionOptions options, ImageDecodeOptions decode)
    {
        var captionPath = Path.ChangeExtension(path, null) + options.CaptionExtension;
        string? existing = null;
        if (File.Exists(captionPath))
        {
            if (FileKind.NotRegular(captionPath) is { } kind) return Skip(relative, $"its caption file {kind}");
            try
            {
                existing = ReadCaption(captionPath);
            }
            catch (DecoderFallbackException)
            {
                return Skip(relative, "its caption file is not UTF-8 text");
            }
            if (existing.Trim().Length == 0) existing = null;  // an empty caption file holds nothing to keep
            else if (options.Mode == CaptionMode.Skip) return Skip(relative, "has a caption already (append or overwrite to change it)");
            else if (options.Mode == CaptionMode.Overwrite) existing = null;
        }
        RgbImage image;
        try
        {
            image = ImageCodec.Load(path, decode);
        }
        catch (UserInputException e)
        {
            return Skip(relative, e is ImageFormatException f ? f.Problem : e.Message);
        }
        catch (IOException e)
        {
            return Skip(relative, $"cannot be read: {e.Message}");
        }
        var tags = TagSelection.Select(tagger.Tags, tagger.Score(image), options);
        if (tags.Count == 0) return Skip(relative, "no tag reached the thresholds");
        var caption = TagSelection.Caption([.. tags.Select(t => t.Text)], existing);
        if (caption is null) return Skip(relative, "its caption has every tag already");
        AtomicFile.WriteAllText(captionPath, caption);
        return (new CaptionedImage(relative, caption, tags), null);
    }

    private static (CaptionedImage?, SkippedImage?) Skip(string image, string reason) => (null, new SkippedImage(image, reason));

    private static string ReadCaption(string path)
    {
        var text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(File.ReadAllBytes(path));
        return text.Length > 0 && text[0] == '\uFEFF' ? text[1..] : text;
    }
}
