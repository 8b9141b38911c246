using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace SdAppliance.Formats;

/// <summary>
/// JSON files a user gives (a model's <c>config.json</c>, <c>scheduler_config.json</c>, a run's <c>run.json</c>...): one that
/// does not parse, nests too deep or holds a value of the wrong type is refused naming the file, the JSON path and the
/// line, so the user knows which of a model folder's configs to fix.
/// </summary>
public static partial class JsonFiles
{
    /// <summary>The file's JSON as <typeparamref name="T"/>; <paramref name="transform"/> may rewrite the text first.</summary>
    public static T Read<T>(string path, JsonSerializerOptions? options = null, Func<string, string>? transform = null)
    {
        var text = File.ReadAllText(path);
        try
        {
            return JsonSerializer.Deserialize<T>(transform is null ? text : transform(text), options)
                ?? throw new UserInputException(path, $"holds null, not a JSON {Kind<T>()}");
        }
        catch (JsonException e)
        {
            throw Refusal(path, e);
        }
    }

    /// <summary>The file's top-level JSON object.</summary>
    public static JsonObject ReadObject(string path, JsonDocumentOptions options = default)
    {
        var text = File.ReadAllText(path);
        try
        {
            return JsonNode.Parse(text, documentOptions: options) as JsonObject
                ?? throw new UserInputException(path, "must hold one JSON object ({ ... })");
        }
        catch (JsonException e)
        {
            throw Refusal(path, e);
        }
    }

    /// <summary>
    /// The refusal of <paramref name="path"/> for <paramref name="e"/>, for callers that parse or convert a file's JSON
    /// themselves: the problem, where it is (JSON path, line and byte, 1-based), the file as the subject.
    /// </summary>
    public static UserInputException Refusal(string path, JsonException e)
    {
        // System.Text.Json appends its own " Path: $.x | LineNumber: 0 | BytePositionInLine: 5." (0-based); say it once, 1-based.
        var problem = LocationSuffix().Replace(e.Message, "").TrimEnd('.', ' ');
        var where = new List<string>();
        if (!string.IsNullOrEmpty(e.Path) && e.Path != "$") where.Add($"at {e.Path}");
        if (e.LineNumber is { } line) where.Add($"line {line + 1}" + (e.BytePositionInLine is { } b ? $", byte {b + 1}" : ""));
        return new UserInputException(path, where.Count == 0 ? $"invalid JSON: {problem}" : $"invalid JSON ({string.Join(", ", where)}): {problem}",
            inner: e);
    }

    private static string Kind<T>() => typeof(T).IsArray || typeof(T).IsAssignableTo(typeof(System.Collections.IList)) ? "array" : "object";

    [GeneratedRegex(@"\s*Path: \S* \| LineNumber: \d+ \| BytePositionInLine: \d+\.?$")]
    private static partial Regex LocationSuffix();
}
