using SdAppliance.Appliance.Storage;
using SdAppliance.Formats;
using SdAppliance.Onnx.Tagging;

namespace SdAppliance.Appliance.Catalog;

/// <summary>An image tagger the appliance can caption with.</summary>
/// <param name="Name">Its folder's name under <c>models/taggers/</c>, what a captioning request names.</param>
/// <param name="TagCount">How many tags its <c>selected_tags.csv</c> lists; null when the list cannot be read (<paramref name="Problem"/> says why).</param>
public sealed record TaggerEntry(string Name, int? TagCount, string? Problem = null);

/// <summary>
/// The taggers in <c>models/taggers/NAME/</c> (the application root's, then the data folder's; a name in both is the data
/// folder's): each a WD14 tagger folder, <c>model.onnx</c> and <c>selected_tags.csv</c>, put there by an admin as it
/// was downloaded. Taggers are shared by everyone; they are not base models, so the model catalog does not list them.
/// </summary>
public sealed class TaggerCatalog(DataFolder data)
{
    public IReadOnlyList<TaggerEntry> List() =>
        [.. Folders().Select(f => Describe(f.Key, f.Value)).OrderBy(t => t.Name, StringComparer.Ordinal)];

    /// <summary>The folder of the tagger named <paramref name="name"/>; refused naming <paramref name="field"/> when there is none.</summary>
    public string Find(string? name, string field = "tagger")
    {
        var checkedName = PathGuard.Name(name, field);
        return Folders().GetValueOrDefault(checkedName)
            ?? throw new UserInputException(field, $"there is no tagger '{checkedName}'",
                Folders().Count == 0
                    ? "put a WD14 tagger folder (model.onnx and selected_tags.csv, as downloaded) in models/taggers/NAME/ of the data folder"
                    : "choose one of " + string.Join(", ", Folders().Keys.Order(StringComparer.Ordinal)));
    }

    private Dictionary<string, string> Folders()
    {
        var found = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var root in data.TaggerFolders)
        {
            if (!Directory.Exists(root)) continue;
            foreach (var folder in Directory.EnumerateDirectories(root))
                if (!Path.GetFileName(folder).StartsWith('.') && WdTagger.IsTaggerFolder(folder))
                    found[Path.GetFileName(folder)] = folder;
        }
        return found;
    }

    private static TaggerEntry Describe(string name, string folder)
    {
        try
        {
            return new TaggerEntry(name, TaggerTags.Read(Path.Combine(folder, WdTagger.TagsFileName)).Count);
        }
        catch (Exception e) when (e is UserInputException or IOException)
        {
            return new TaggerEntry(name, null, e.Message);
        }
    }
}
