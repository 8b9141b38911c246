using SdAppliance.Formats;
using SdAppliance.Formats.Hashing;

namespace SdAppliance.Appliance.Generation;

// Interim: replaced by the storage branch's catalog when it lands (this file is then deleted).

/// <summary>A base model: <see cref="Title"/> as A1111 shows it ("name.safetensors [hash]"), <see cref="Name"/> without extension.</summary>
public sealed record CatalogModel(string Title, string Name, string FileName, string Path, string? ShortHash, string? Sha256);

/// <summary>The base models and adapters the appliance can use.</summary>
public sealed class ModelCatalog(ApplianceOptions options)
{
    private readonly FileHashes hashes = new(System.IO.Path.Combine(options.DataFolder, "cache", "hashes.json"));

    public IReadOnlyList<string> Folders(string kind) =>
        options.ApplicationRoot is { } root
            ? [System.IO.Path.Combine(root, "models", kind), System.IO.Path.Combine(options.DataFolder, "models", kind)]
            : [System.IO.Path.Combine(options.DataFolder, "models", kind)];

    public CatalogModel? Default => Models().FirstOrDefault(m => m.Name == "demo");

    public IReadOnlyList<CatalogModel> Models()
    {
        var models = new List<CatalogModel>();
        if (options.ApplicationRoot is { } root && Directory.Exists(System.IO.Path.Combine(root, "models", "demo")))
            models.Add(new CatalogModel("demo", "demo", "demo", System.IO.Path.Combine(root, "models", "demo"), null, null));
        var folder = System.IO.Path.Combine(options.DataFolder, "models");
        if (Directory.Exists(folder))
            foreach (var file in Directory.EnumerateFiles(folder).Where(f => System.IO.Path.GetExtension(f) is ".safetensors" or ".ckpt").Order(StringComparer.Ordinal))
            {
                var sha = hashes.Sha256(file);
                var name = System.IO.Path.GetFileName(file);
                models.Add(new CatalogModel($"{name} [{sha[..10]}]", System.IO.Path.GetFileNameWithoutExtension(file), name, file, sha[..10], sha));
            }
        return models;
    }

    public CatalogModel? TryFind(string name) =>
        Models().FirstOrDefault(m => new[] { m.Title, m.Name, m.FileName, m.ShortHash }.Contains(name.Trim(), StringComparer.OrdinalIgnoreCase));

    public CatalogModel Find(string name) => TryFind(name)
        ?? throw new UserInputException("model", $"no model '{name}'; the models are: {string.Join(", ", Models().Select(m => m.Title))}");

    public string FindLora(string name)
    {
        foreach (var folder in Folders("lora"))
        {
            var file = System.IO.Path.Combine(folder, name + ".safetensors");
            if (!name.Contains('/', StringComparison.Ordinal) && !name.Contains('\\', StringComparison.Ordinal) && File.Exists(file)) return file;
        }
        throw new UserInputException("loras", $"no LoRA '{name}'");
    }
}
