using System.Globalization;
using System.Text;
using SdAppliance.Formats;

namespace SdAppliance.Appliance.Storage;

/// <summary>
/// Turns a path or a name that came in a request into a full path that stays inside its folder (a folder of the data
/// folder, or one of <see cref="ApplianceOptions.ImportRoots"/>), or refuses it with a <see cref="UserInputException"/> naming
/// the field and the value. A path is taken literally: it is never URL-decoded here, so anything that still looks
/// encoded (<c>%2e%2e</c>, <c>%252f</c>) was encoded twice on purpose and is refused, as are backslashes, control
/// characters (NUL), Unicode look-alikes of <c>.</c> and <c>/</c> (they become the real thing under NFKC normalisation,
/// which some file systems and tools apply), <c>..</c>, hidden names, absolute paths, and links whose target is outside.
/// </summary>
public sealed class PathGuard(DataFolder data, ApplianceOptions options)
{
    /// <summary>The data folder the guard keeps request paths inside.</summary>
    public DataFolder Data => data;

    // Links are followed at most this often while resolving one path (Linux's own limit is 40).
    private const int MaxLinkHops = 40;

    /// <summary>
    /// <paramref name="requested"/>, a relative path such as <c>2026-12-02/00001.png</c>, resolved inside
    /// <paramref name="folder"/>, which must be the data folder or a folder in it. The result need not exist.
    /// </summary>
    /// <param name="field">The request field the value came from, named in the error.</param>
    /// <param name="followLastLink">False to allow the last part to be a link that leaves (a linked import being deleted:
    /// the link is what is touched, never read through).</param>
    public string Resolve(string? requested, string folder, string field = "path", bool followLastLink = true)
    {
        var area = Path.TrimEndingDirectorySeparator(Path.GetFullPath(folder));
        if (!IsInside(area, data.FullPath))
            throw new ArgumentException($"{folder} is not inside the data folder {data.FullPath}", nameof(folder));
        var text = CheckCharacters(requested, field);
        var where = Relative(area);
        if (text.StartsWith('/') || Path.IsPathRooted(text) || (text.Length >= 2 && text[1] == ':' && char.IsAsciiLetter(text[0])))
            throw Refuse(field, text, "is an absolute path", $"give a path relative to {where}");
        var parts = text.Split('/', StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0) throw Refuse(field, text, "names no file", $"give a path relative to {where}");
        foreach (var part in parts)
            CheckSegment(part, field, text, where);
        if (followLastLink) return Contain(Path.Combine([area, .. parts]), [area], field, text, where);
        var parent = parts.Length == 1 ? area : Contain(Path.Combine([area, .. parts[..^1]]), [area], field, text, where);
        return Path.Combine(parent, parts[^1]);
    }

    /// <summary>A single file or folder name (a dataset, an upload): no folders, nothing hidden, nothing that reads as a path.</summary>
    public static string Name(string? requested, string field)
    {
        var text = CheckCharacters(requested, field);
        if (text.Contains('/'))
            throw Refuse(field, text, "contains '/'", "give a plain name without folders");
        CheckSegment(text, field, text, "its folder");
        if (Encoding.UTF8.GetByteCount(text) > 255)
            throw Refuse(field, text, "is longer than 255 bytes, the file system's limit for a name", "give a shorter name");
        return text;
    }

    /// <summary>
    /// A server path to import from: a full path inside one of <see cref="ApplianceOptions.ImportRoots"/> (after following
    /// links). It must exist.
    /// </summary>
    public string ResolveImport(string? requested, string field = "path")
    {
        var roots = ImportRoots();
        var text = CheckCharacters(requested, field);
        if (roots.Count == 0)
            throw Refuse(field, text, "cannot be imported: no import roots are configured", "ask the administrator to add the folder to ImportRoots, or upload the file");
        var full = ResolveFull(text, roots, field, string.Join(" or ", roots));
        if (!File.Exists(full) && !Directory.Exists(full))
            throw Refuse(field, text, "does not exist", $"give an existing file or folder inside {string.Join(" or ", roots)}");
        return full;
    }

    /// <summary>
    /// A path in a job request (a model, a dataset, an output folder): relative to the data folder (<c>datasets/cats</c>),
    /// or a full path inside the data folder, an import root or the application's <c>models/</c> (the demo model), after
    /// following links. The result need not exist.
    /// </summary>
    public string ResolveRequestPath(string? requested, string field)
    {
        var text = CheckCharacters(requested, field);
        if (!text.StartsWith('/')) return Resolve(text, data.FullPath, field);
        List<string> roots = [data.FullPath, .. ImportRoots()];
        if (data.ApplicationRoot is { } application) roots.Add(Path.Combine(application, "models"));
        return ResolveFull(text, roots, field, "the data folder, an import root or the application's models/");
    }

    private List<string> ImportRoots() => options.ImportRoots.Select(r => Path.TrimEndingDirectorySeparator(Path.GetFullPath(r))).ToList();

    private static string ResolveFull(string text, IReadOnlyList<string> roots, string field, string where)
    {
        if (!text.StartsWith('/'))
            throw Refuse(field, text, "is not a full path", $"give the full path of a file or folder inside {where}");
        var parts = text.Split('/', StringSplitOptions.RemoveEmptyEntries);
        if (parts.Any(p => p == ".."))
            throw Refuse(field, text, "climbs with '..'", $"give the full path inside {where} without '..'");
        return Contain(Path.Combine(["/", .. parts]), roots, field, text, where);
    }

    /// <summary>The real path of <paramref name="fullPath"/>: every link on the way replaced by its target; parts that do not exist are kept.</summary>
    public static string RealPath(string fullPath)
    {
        var pending = new Queue<string>(Path.GetFullPath(fullPath).Split('/', StringSplitOptions.RemoveEmptyEntries));
        var current = "/";
        var hops = 0;
        while (pending.TryDequeue(out var part))
        {
            var next = Path.Combine(current, part);
            if (new FileInfo(next).LinkTarget is not { } target)
            {
                current = next;
                continue;
            }
            if (++hops > MaxLinkHops) throw new IOException($"{fullPath}: more than {MaxLinkHops} links on the way (a loop?)");
            // The target is relative to the link's folder, which is real already; what follows it is still to walk.
            var resolved = Path.GetFullPath(target, current).Split('/', StringSplitOptions.RemoveEmptyEntries);
            pending = new Queue<string>([.. resolved, .. pending]);
            current = "/";
        }
        return current;
    }

    private string Relative(string area)
    {
        var relative = Path.GetRelativePath(data.FullPath, area);
        return relative == "." ? "the data folder" : $"the data folder's {relative}/";
    }

    private static string CheckCharacters(string? requested, string field)
    {
        if (string.IsNullOrWhiteSpace(requested))
            throw new UserInputException(field, "is empty", "give a name or a relative path");
        foreach (var (c, i) in requested.Select((c, i) => (c, i)))
        {
            if (char.IsControl(c))
                throw Refuse(field, requested, $"contains the control character U+{(int)c:X4}", "remove it");
            if (c == '\\')
                throw Refuse(field, requested, "contains a backslash", "separate folders with '/'");
            if (c == '%' && i + 2 < requested.Length && Uri.IsHexDigit(requested[i + 1]) && Uri.IsHexDigit(requested[i + 2]))
                throw Refuse(field, requested, $"contains the URL-encoded character {requested.Substring(i, 3)}, which is taken literally here",
                    "send the name itself, encoded once at most by the HTTP client");
            if (LookAlikes.TryGetValue(c, out var reads))
                throw Refuse(field, requested, $"contains U+{(int)c:X4}, which reads as '{reads}'",
                    "use plain ASCII for '.', '/' and '\\'");
            if (char.IsSurrogate(c) && !(char.IsHighSurrogate(c) && i + 1 < requested.Length && char.IsLowSurrogate(requested[i + 1]))
                && !(char.IsLowSurrogate(c) && i > 0 && char.IsHighSurrogate(requested[i - 1])))
                throw Refuse(field, requested, "is not valid UTF-16 text (a lone surrogate)", "send valid UTF-8");
        }
        return requested;
    }

    // What each look-alike reads as: the characters whose NFKC form holds '.', '/', '\\', ':' or '%' (a table, since
    // InvariantGlobalization leaves string.Normalize without its data), and the slashes that only look like '/'.
    private static readonly Dictionary<char, string> LookAlikes = new()
    {
        ['\u2024'] = ".", ['\u2025'] = "..", ['\u2026'] = "...", ['\uFE52'] = ".", ['\uFF0E'] = ".",
        ['\uFF0F'] = "/", ['\u2215'] = "/", ['\u2044'] = "/", ['\u29F8'] = "/",
        ['\uFE68'] = "\\", ['\uFF3C'] = "\\", ['\u29F5'] = "\\", ['\u29F9'] = "\\",
        ['\uFE13'] = ":", ['\uFE55'] = ":", ['\uFF1A'] = ":",
        ['\uFE6A'] = "%", ['\uFF05'] = "%",
    };

    private static void CheckSegment(string part, string field, string text, string where)
    {
        if (part == "..")
            throw Refuse(field, text, "climbs out with '..'", $"give a path inside {where}");
        if (part.StartsWith('.'))
            throw Refuse(field, text, $"names the hidden '{part}'", "hidden files and folders (a leading '.') are not reachable");
        // Windows and some tools drop trailing spaces, which would turn ".. " into "..".
        if (part != part.TrimEnd())
            throw Refuse(field, text, $"has the part '{part}', which ends in white space", "remove the spaces at the end of names");
    }

    // Lexically inside, and still inside once every link on the way is followed.
    private static string Contain(string candidate, IReadOnlyList<string> roots, string field, string text, string where)
    {
        var full = Path.GetFullPath(candidate);
        if (!roots.Any(root => IsInside(full, root)))
            throw Refuse(field, text, "leads outside", $"give a path inside {where}");
        string real;
        try
        {
            real = RealPath(full);
        }
        catch (IOException e)
        {
            throw Refuse(field, text, e.Message, $"give a path inside {where}");
        }
        if (!roots.Any(root => IsInside(real, RealPath(root))))
            throw Refuse(field, text, "leads outside through a link", $"give a path inside {where}, without links that point out of it");
        return full;
    }

    private static bool IsInside(string path, string root) =>
        path == root || path.StartsWith(root.EndsWith('/') ? root : root + "/", StringComparison.Ordinal);

    private static UserInputException Refuse(string field, string value, string problem, string fix) =>
        new(field, $"'{Printable(value)}' {problem}", fix);

    private static string Printable(string value)
    {
        var text = new StringBuilder(value.Length);
        foreach (var c in value)
            text.Append(char.IsControl(c) ? $"\\u{(int)c:x4}" : c.ToString(CultureInfo.InvariantCulture));
        return text.ToString();
    }
}
