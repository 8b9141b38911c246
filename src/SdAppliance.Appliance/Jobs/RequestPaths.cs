using SdAppliance.Formats;

namespace SdAppliance.Appliance.Jobs;

/// <summary>
/// Paths in job requests: relative ones are inside the data folder (<c>datasets/cats</c>); any path must end up inside
/// the data folder, an import root or the application's own models (the demo model), else it is refused naming the field.
/// </summary>
internal static class RequestPaths
{
    public static string Resolve(ApplianceOptions options, string field, string path)
    {
        var full = Path.GetFullPath(Path.IsPathRooted(path) ? path : Path.Combine(options.DataFolder, path));
        IEnumerable<string> roots = [options.DataFolder, .. options.ImportRoots];
        if (options.ApplicationRoot is { } app) roots = roots.Append(Path.Combine(app, "models"));
        if (roots.Any(root => IsInside(full, Path.GetFullPath(root)))) return full;
        throw new UserInputException(field, $"'{path}' is outside the data folder and the import roots",
            "give a path relative to the data folder (datasets/NAME, models/NAME)");
    }

    private static bool IsInside(string path, string root) =>
        path == root || path.StartsWith(root.EndsWith(Path.DirectorySeparatorChar) ? root : root + Path.DirectorySeparatorChar, StringComparison.Ordinal);

    /// <summary>A file inside the data folder as events and results name it: relative, with forward slashes.</summary>
    public static string Relative(ApplianceOptions options, string path) =>
        Path.GetRelativePath(options.DataFolder, path).Replace(Path.DirectorySeparatorChar, '/');
}
