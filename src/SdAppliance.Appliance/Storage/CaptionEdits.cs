using SdAppliance.Formats;

namespace SdAppliance.Appliance.Storage;

/// <summary>What a bulk caption edit does.</summary>
public enum CaptionEditKind
{
    /// <summary>Puts <see cref="CaptionEdit.Text"/> as the first tag (moved there when it is elsewhere; nothing when it is first already).</summary>
    AddTrigger,

    /// <summary>Replaces every occurrence of <see cref="CaptionEdit.Text"/> with <see cref="CaptionEdit.Replacement"/> (plain text, case-sensitive).</summary>
    Replace,

    /// <summary>Takes out every tag equal to <see cref="CaptionEdit.Text"/> (whole tags only, case-sensitive).</summary>
    RemoveTag,
}

/// <summary>One bulk caption edit: what to do, the text it works on and, for a replace, what replaces it.</summary>
public sealed record CaptionEdit(CaptionEditKind Kind, string Text, string Replacement = "");

/// <summary>
/// The rules of caption edits, as kohya reads captions: a caption is split into tags at commas, each tag trimmed and
/// empty tags dropped (kohya's <c>caption.split(",")</c> then <c>strip()</c>); an edited caption is joined again with
/// <c>", "</c>, as kohya joins a shuffled one. A caption that an edit does not touch is returned as it was, byte for
/// byte. An image without a caption file has the caption null (kohya then uses its folder's name); adding a trigger
/// word gives it a caption of that word alone.
/// </summary>
public static class CaptionEdits
{
    /// <summary>The caption's tags: split at commas, trimmed, empty ones dropped, in order (duplicates kept).</summary>
    public static IReadOnlyList<string> Tags(string? caption) =>
        string.IsNullOrWhiteSpace(caption) ? [] : caption.Split(',').Select(t => t.Trim()).Where(t => t.Length > 0).ToList();

    /// <summary>Tags joined as kohya joins them.</summary>
    public static string Join(IEnumerable<string> tags) => string.Join(", ", tags);

    /// <summary>Whether the caption has the tag <paramref name="tag"/> (trimmed, whole, case-sensitive).</summary>
    public static bool HasTag(string? caption, string tag) => Tags(caption).Contains(tag.Trim(), StringComparer.Ordinal);

    /// <summary>Refuses an edit that would do nothing sensible, naming the field: an empty text, a trigger word or tag with a comma in it.</summary>
    public static void Check(CaptionEdit edit)
    {
        ArgumentNullException.ThrowIfNull(edit);
        var text = edit.Text?.Trim() ?? "";
        switch (edit.Kind)
        {
            case CaptionEditKind.AddTrigger:
                if (text.Length == 0) throw new UserInputException("trigger", "is empty", "type the trigger word to put in front of every caption, such as sks");
                if (text.Contains(',')) throw new UserInputException("trigger", $"'{text}' has a comma, which would make it two tags", "give one tag without commas");
                break;
            case CaptionEditKind.Replace:
                if (string.IsNullOrEmpty(edit.Text)) throw new UserInputException("find", "is empty", "type the text to find");
                break;
            case CaptionEditKind.RemoveTag:
                if (text.Length == 0) throw new UserInputException("tag", "is empty", "type the tag to remove, or click one in the tag table");
                if (text.Contains(',')) throw new UserInputException("tag", $"'{text}' has a comma; a tag has none", "give one tag without commas");
                break;
            default:
                throw new UserInputException("kind", $"'{edit.Kind}' is not a caption edit", "add_trigger, replace or remove_tag");
        }
    }

    /// <summary>The caption after <paramref name="edit"/> (checked first, <see cref="Check"/>); the same string when the edit does not touch it.</summary>
    public static string? Apply(CaptionEdit edit, string? caption)
    {
        Check(edit);
        return edit.Kind switch
        {
            CaptionEditKind.AddTrigger => AddTrigger(caption, edit.Text),
            CaptionEditKind.Replace => Replace(caption, edit.Text, edit.Replacement),
            _ => RemoveTag(caption, edit.Text),
        };
    }

    /// <summary>The trigger word as the first tag: unchanged when it is first already; moved to the front (not doubled) when it is elsewhere.</summary>
    public static string AddTrigger(string? caption, string trigger)
    {
        var word = trigger.Trim();
        var tags = Tags(caption);
        if (tags.Count > 0 && tags[0] == word && caption is not null) return caption;
        return Join([word, .. tags.Where(t => t != word)]);
    }

    /// <summary>Every occurrence of <paramref name="find"/> replaced (ordinal); the result trimmed. Null stays null (there is no text to find in).</summary>
    public static string? Replace(string? caption, string find, string replacement)
    {
        if (caption is null || !caption.Contains(find, StringComparison.Ordinal)) return caption;
        return caption.Replace(find, replacement ?? "", StringComparison.Ordinal).Trim();
    }

    /// <summary>The caption without the tags equal to <paramref name="tag"/>; unchanged when it has none.</summary>
    public static string? RemoveTag(string? caption, string tag)
    {
        var word = tag.Trim();
        var tags = Tags(caption);
        return tags.Contains(word, StringComparer.Ordinal) ? Join(tags.Where(t => t != word)) : caption;
    }

    /// <summary>How many of <paramref name="captions"/> the edit changes.</summary>
    public static int CountChanged(CaptionEdit edit, IEnumerable<string?> captions) =>
        captions.Count(c => !string.Equals(Apply(edit, c), c, StringComparison.Ordinal));

    /// <summary>In how many captions each tag occurs (a tag twice in one caption counts once), most frequent first, then by tag.</summary>
    public static IReadOnlyList<TagCount> Frequencies(IEnumerable<string?> captions) =>
        captions.SelectMany(c => Tags(c).Distinct(StringComparer.Ordinal))
            .GroupBy(t => t, StringComparer.Ordinal)
            .Select(g => new TagCount(g.Key, g.Count()))
            .OrderByDescending(t => t.Count).ThenBy(t => t.Tag, StringComparer.Ordinal)
            .ToList();
}

/// <summary>A tag and the number of captions that have it.</summary>
public sealed record TagCount(string Tag, int Count);
