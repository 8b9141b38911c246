using System.Globalization;
using System.Text;
using SdAppliance.Formats;

namespace SdAppliance.Onnx.Tagging;

/// <summary>What a tag of a WD14 tagger's <c>selected_tags.csv</c> names: the booru categories the taggers keep.</summary>
public enum TagCategory
{
    General = 0,
    Character = 4,
    Rating = 9,
}

/// <summary>One tag of a tagger, in the model's output order: its name as the CSV spells it (underscores) and its category number.</summary>
/// <param name="Category">The CSV's number: 0 general, 4 character, 9 rating; any other (artist, copyright, meta in other taggers) is scored as a general tag.</param>
public sealed record TaggerTag(string Name, int Category)
{
    public bool IsRating => Category == (int)TagCategory.Rating;

    public bool IsCharacter => Category == (int)TagCategory.Character;
}

/// <summary>
/// Reads <c>selected_tags.csv</c>, the tag list WD14 taggers ship beside <c>model.onnx</c>: a header row
/// (<c>tag_id,name,category,count</c>) and one row per output of the model, in output order. Columns are found by
/// their header names, so a CSV with other or reordered columns reads too; <c>name</c> and <c>category</c> are required.
/// Fields may be quoted as RFC 4180 says (a tag name with a comma).
/// </summary>
public static class TaggerTags
{
    public static IReadOnlyList<TaggerTag> Read(string path)
    {
        string text;
        try
        {
            text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(File.ReadAllBytes(path));
        }
        catch (DecoderFallbackException)
        {
            throw new UserInputException(path, "is not UTF-8 text", "use the selected_tags.csv that came with the tagger");
        }
        if (text.Length > 0 && text[0] == '\uFEFF') text = text[1..];
        var rows = Rows(text, path).ToList();
        if (rows.Count == 0)
            throw new UserInputException(path, "is empty", "use the selected_tags.csv that came with the tagger (tag_id,name,category,count)");
        var header = rows[0].Fields.Select(h => h.Trim()).ToList();
        var nameColumn = header.IndexOf("name");
        var categoryColumn = header.IndexOf("category");
        if (nameColumn < 0 || categoryColumn < 0)
            throw new UserInputException(path, $"has no {(nameColumn < 0 ? "'name'" : "'category'")} column (its header is '{string.Join(",", header)}')",
                "a WD14 tag list starts with the header tag_id,name,category,count");
        var tags = new List<TaggerTag>(rows.Count - 1);
        foreach (var (line, fields) in rows.Skip(1))
        {
            if (fields.Count == 1 && fields[0].Length == 0) continue;  // a blank line
            if (fields.Count <= Math.Max(nameColumn, categoryColumn))
                throw new UserInputException($"{path}:{line}", $"has {fields.Count} fields, fewer than the header's {header.Count}");
            var name = fields[nameColumn].Trim();
            if (name.Length == 0) throw new UserInputException($"{path}:{line}", "has an empty tag name");
            if (!int.TryParse(fields[categoryColumn].Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var category))
                throw new UserInputException($"{path}:{line}", $"category '{fields[categoryColumn]}' of '{name}' is not a number", "0 general, 4 character, 9 rating");
            tags.Add(new TaggerTag(name, category));
        }
        if (tags.Count == 0) throw new UserInputException(path, "lists no tags, only its header");
        return tags;
    }

    /// <summary>The CSV's rows with the line each starts on; a quoted field may hold commas, quotes ("") and line breaks.</summary>
    private static IEnumerable<(int Line, List<string> Fields)> Rows(string text, string path)
    {
        var line = 1;
        var i = 0;
        while (i < text.Length)
        {
            var start = line;
            var fields = new List<string>();
            var field = new StringBuilder();
            var quoted = false;
            while (i < text.Length)
            {
                var c = text[i++];
                if (quoted)
                {
                    if (c == '"' && i < text.Length && text[i] == '"') { field.Append('"'); i++; }
                    else if (c == '"') quoted = false;
                    else { if (c == '\n') line++; field.Append(c); }
                }
                else if (c == '"' && field.Length == 0) quoted = true;
                else if (c == ',') { fields.Add(field.ToString()); field.Clear(); }
                else if (c == '\n') { line++; break; }
                else if (c != '\r') field.Append(c);
            }
            if (quoted) throw new UserInputException($"{path}:{start}", "has a quoted field that never ends");
            fields.Add(field.ToString());
            yield return (start, fields);
        }
    }
}
