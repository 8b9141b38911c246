namespace SdAppliance.Onnx.Tagging;

/// <summary>A tag the tagger gave an image: its caption spelling, its score, and the tag as the CSV lists it.</summary>
public sealed record ScoredTag(string Text, float Score, TaggerTag Tag);

/// <summary>
/// The rules that turn one image's scores into its caption's tags. General tags (and any category that is neither
/// character nor rating) need <see cref="CaptionOptions.Threshold"/>, character tags
/// <see cref="CaptionOptions.CharacterThreshold"/>, each "score at least the threshold" as kohya compares. The tags are
/// ordered by score, highest first, as SmilingWolf's app orders them (kohya keeps the CSV's order, which is by tag
/// popularity, not by what the picture shows); equal scores keep the CSV's order. Rating tags are one choice, the
/// likeliest, written first only with <see cref="CaptionOptions.RatingTag"/>. Undesired tags are dropped whatever their score.
/// </summary>
public static class TagSelection
{
    /// <summary>
    /// Emoticon tags whose underscore is part of the face, kept when underscores become spaces (the list SmilingWolf's
    /// app and A1111's tagger keep; kohya keeps the underscores of every tag of three characters or fewer, which these
    /// mostly are).
    /// </summary>
    public static readonly IReadOnlySet<string> Kaomoji = new HashSet<string>(StringComparer.Ordinal)
    {
        "0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9", ">_o", "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||",
    };

    /// <summary>The caption spelling of a tag: underscores as spaces unless kept or a kaomoji.</summary>
    public static string Format(string name, bool keepUnderscores) =>
        keepUnderscores || Kaomoji.Contains(name) ? name : name.Replace('_', ' ');

    /// <summary>The tags to write for an image whose scores are <paramref name="scores"/> (one per tag, in the CSV's order).</summary>
    public static IReadOnlyList<ScoredTag> Select(IReadOnlyList<TaggerTag> tags, ReadOnlySpan<float> scores, CaptionOptions options)
    {
        if (scores.Length != tags.Count)
            throw new ArgumentException($"{scores.Length} scores for {tags.Count} tags", nameof(scores));
        var undesired = options.UndesiredTags.Select(Normalise).ToHashSet(StringComparer.Ordinal);
        var chosen = new List<(ScoredTag Tag, int Index)>();
        var rating = -1;
        for (var i = 0; i < tags.Count; i++)
        {
            var tag = tags[i];
            if (tag.IsRating)
            {
                if (rating < 0 || scores[i] > scores[rating]) rating = i;
                continue;
            }
            var threshold = tag.IsCharacter ? options.CharacterThreshold : options.Threshold;
            if (scores[i] >= threshold && !undesired.Contains(Normalise(tag.Name)))
                chosen.Add((new ScoredTag(Format(tag.Name, options.KeepUnderscores), scores[i], tag), i));
        }
        var ordered = chosen.OrderByDescending(c => c.Tag.Score).ThenBy(c => c.Index).Select(c => c.Tag).ToList();
        if (options.RatingTag && rating >= 0 && !undesired.Contains(Normalise(tags[rating].Name)))
            ordered.Insert(0, new ScoredTag(Format(tags[rating].Name, options.KeepUnderscores), scores[rating], tags[rating]));
        // Two CSV names may read the same once underscores are spaces; a caption holds each tag once.
        return [.. ordered.DistinctBy(t => t.Text, StringComparer.Ordinal)];
    }

    /// <summary>
    /// The caption an image gets: <paramref name="tags"/> joined with ", " (kohya's separator) or, appending to
    /// <paramref name="existing"/> (its first line), its own tags first and then the ones it lacks. Later lines of the
    /// existing file (kohya's wildcard captions) are kept below. Null when appending adds nothing.
    /// </summary>
    public static string? Caption(IReadOnlyList<string> tags, string? existing)
    {
        if (existing is null) return string.Join(", ", tags);
        var end = existing.IndexOfAny(['\r', '\n']);
        var (first, rest) = end < 0 ? (existing, "") : (existing[..end], existing[end..]);
        var own = first.Split(',').Select(t => t.Trim()).Where(t => t.Length > 0).ToList();
        var added = tags.Where(t => !own.Contains(t, StringComparer.Ordinal)).ToList();
        if (added.Count == 0) return null;
        return string.Join(", ", own.Concat(added)) + rest;
    }

    private static string Normalise(string tag) => tag.Trim().Replace('_', ' ');
}
