using SdAppliance.Appliance.Storage;
using SdAppliance.Formats;

namespace SdAppliance.Appliance.Catalog;

/// <summary>A VAE the appliance can use in place of a model's own.</summary>
/// <param name="Name">A1111's <c>sd_vae</c> value for it: its path relative to <c>models/vae/</c> with '/' between folders, the extension kept (<c>vae-ft-mse-840000-ema-pruned.safetensors</c>).</param>
/// <param name="Path">The full path on the server, what the loader reads.</param>
/// <param name="ShortHash">A1111's <c>VAE hash</c>: the file's first 10 hex digits of SHA-256; null for a diffusers VAE folder.</param>
public sealed record VaeEntry(string Name, string Path, string? ShortHash);

/// <summary>
/// The VAEs in <c>models/vae/</c> (the application root's, then the data folder's; a name in both is the data folder's):
/// <c>.safetensors</c>, <c>.pt</c> and <c>.ckpt</c> files (the original layout, as A1111's <c>models/VAE</c> holds them)
/// and diffusers VAE folders (<c>config.json</c> + weights), put there by hand and shared by everyone. Whether one fits a
/// model is told when it is loaded into that model (<c>ModelLoader</c> refuses other shapes, naming the tensor).
/// </summary>
public sealed class VaeCatalog(DataFolder data, ModelCatalog models)
{
    /// <summary>A1111's <c>sd_vae</c> values that mean the model's own VAE (A1111's Automatic also looks for a VAE named like the checkpoint; here it is the model's own).</summary>
    public static readonly IReadOnlyList<string> ModelsOwn = ["Automatic", "None"];

    private static readonly string[] Extensions = [".safetensors", ".pt", ".ckpt"];

    public IReadOnlyList<VaeEntry> List() =>
        [.. Found().OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => new VaeEntry(kv.Key, kv.Value, File.Exists(kv.Value) ? models.Hashes.ModelShortHash(kv.Value) : null))];

    /// <summary>
    /// The VAE <paramref name="name"/> stands for: null for the model's own (null, empty, <see cref="ModelsOwn"/>), else the
    /// entry of that name (exactly, else ignoring case, else by the name without its extension); refused naming
    /// <paramref name="field"/> when there is none.
    /// </summary>
    public VaeEntry? Find(string? name, string field = "vae")
    {
        if (string.IsNullOrWhiteSpace(name) || ModelsOwn.Contains(name, StringComparer.OrdinalIgnoreCase)) return null;
        var found = Found();
        var key = found.Keys.FirstOrDefault(k => k == name)
            ?? found.Keys.FirstOrDefault(k => string.Equals(k, name, StringComparison.OrdinalIgnoreCase))
            ?? found.Keys.FirstOrDefault(k => string.Equals(System.IO.Path.ChangeExtension(k, null), name, StringComparison.OrdinalIgnoreCase))
            ?? throw new UserInputException(field, $"there is no VAE '{name}'",
                found.Count == 0
                    ? $"put the VAE file (.safetensors, .pt, .ckpt) or diffusers VAE folder in models/vae/ of the data folder, or choose {string.Join(" or ", ModelsOwn)}"
                    : $"choose {string.Join(", ", ModelsOwn)} or one of {string.Join(", ", found.Keys.Order(StringComparer.Ordinal))}");
        var path = found[key];
        return new VaeEntry(key, path, File.Exists(path) ? models.Hashes.ModelShortHash(path) : null);
    }

    private Dictionary<string, string> Found()
    {
        var found = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var root in data.VaeFolders)
        {
            if (!Directory.Exists(root)) continue;
            var pending = new Stack<string>([root]);
            while (pending.TryPop(out var folder))
            {
                foreach (var entry in new DirectoryInfo(folder).EnumerateFileSystemInfos())
                {
                    if (entry.Name.StartsWith('.')) continue;
                    var relative = System.IO.Path.GetRelativePath(root, entry.FullName).Replace('\\', '/');
                    if (entry is DirectoryInfo sub)
                    {
                        if (File.Exists(System.IO.Path.Combine(sub.FullName, "config.json"))) found[relative] = sub.FullName;
                        else pending.Push(sub.FullName);
                    }
                    else if (Extensions.Contains(System.IO.Path.GetExtension(entry.Name).ToLowerInvariant()))
                    {
                        found[relative] = entry.FullName;
                    }
                }
            }
        }
        return found;
    }
}
