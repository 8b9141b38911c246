using System.Globalization;
using SdAppliance.Formats;

namespace SdAppliance.Onnx.Tagging;

/// <summary>What happens to an image that has a caption file already.</summary>
public enum CaptionMode
{
    /// <summary>
    /// It is left alone and reported as skipped. kohya's script overwrites by default; we do not, since a caption a
    /// person wrote would be lost; <see cref="Append"/> and <see cref="Overwrite"/> say what to do instead.
    /// </summary>
    Skip,

    /// <summary>The tags it lacks are added after its own (kohya's <c>--append_tags</c>): its tags stay first and in order, none doubled.</summary>
    Append,

    /// <summary>Its caption is replaced by the tagger's.</summary>
    Overwrite,
}

/// <summary>
/// How tagger scores become a caption. The defaults are kohya's (<c>tag_images_by_wd14_tagger.py</c>): a tag is written
/// when its score reaches <see cref="Threshold"/> (general tags; kohya's <c>--thresh</c> 0.35) or
/// <see cref="CharacterThreshold"/> (character tags; 0.85 as SmilingWolf's own app and most kohya guides set
/// <c>--character_threshold</c>), rating tags are not written unless <see cref="RatingTag"/>, and captions go to
/// <c>.txt</c> files beside the images.
/// </summary>
public sealed record CaptionOptions
{
    public const double DefaultThreshold = 0.35;
    public const double DefaultCharacterThreshold = 0.85;
    public const string DefaultCaptionExtension = ".txt";

    public double Threshold { get; init; } = DefaultThreshold;

    public double CharacterThreshold { get; init; } = DefaultCharacterThreshold;

    /// <summary>Tags never written, as the CSV spells them or with spaces for underscores (either matches).</summary>
    public IReadOnlyList<string> UndesiredTags { get; init; } = [];

    public CaptionMode Mode { get; init; } = CaptionMode.Skip;

    /// <summary>The caption file's extension (kohya's <c>--caption_extension</c>), with its dot.</summary>
    public string CaptionExtension { get; init; } = DefaultCaptionExtension;

    /// <summary>
    /// Keep the CSV's underscores (<c>long_hair</c>). Off by default: captions get spaces (<c>long hair</c>), as
    /// SmilingWolf's app and A1111's tagger write them and as prompts are typed; kaomoji (<c>^_^</c>) keep theirs.
    /// kohya keeps underscores unless <c>--remove_underscore</c>.
    /// </summary>
    public bool KeepUnderscores { get; init; }

    /// <summary>Write the likeliest rating tag (<c>general</c>, <c>sensitive</c>...) first, as kohya's <c>--use_rating_tags</c>.</summary>
    public bool RatingTag { get; init; }

    /// <summary>Refuses a setting that cannot work, naming its field (<c>threshold</c>, <c>character_threshold</c>, <c>caption_extension</c>).</summary>
    public void Validate()
    {
        CheckThreshold(Threshold, "threshold");
        CheckThreshold(CharacterThreshold, "character_threshold");
        if (!Enum.IsDefined(Mode))
            throw new UserInputException("mode", $"'{Mode}' is not a caption mode", "skip, append or overwrite");
        var extension = CaptionExtension ?? "";
        if (extension.Length < 2 || extension[0] != '.' || extension.IndexOfAny(['/', '\\', '\0']) >= 0 || extension.Trim() != extension)
            throw new UserInputException("caption_extension", $"'{extension}' is not a file extension", "give one with its dot, such as .txt");
        if (DatasetImages.Extensions.Contains(extension))
            throw new UserInputException("caption_extension", $"'{extension}' is an image extension: the captions would replace the images", "use .txt or .caption");
    }

    /// <summary>A comma-separated tag list (kohya's <c>--undesired_tags</c>) as its tags, each trimmed, empty ones dropped.</summary>
    public static IReadOnlyList<string> ParseTagList(string? text) =>
        string.IsNullOrWhiteSpace(text) ? [] : [.. text.Split(',').Select(t => t.Trim()).Where(t => t.Length > 0)];

    private static void CheckThreshold(double value, string field)
    {
        if (!double.IsFinite(value) || value < 0 || value > 1)
            throw new UserInputException(field, $"{value.ToString(CultureInfo.InvariantCulture)} is not a score", "give a number from 0 to 1, such as 0.35");
    }
}
