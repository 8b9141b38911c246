namespace SdAppliance.Cli;

/// <summary>
/// The folders the commands look in: the application root (the repository or install folder, the one
/// holding <c>models/configs</c>, found upwards from the program) and the data folder (<c>$SDAPP_DATA</c>,
/// default <c>./data</c>).
/// </summary>
/// <param name="Root">The application root, or null when the program runs outside one.</param>
/// <param name="Data">The data folder (it need not exist).</param>
internal sealed record AppPaths(string? Root, string Data)
{
    public static AppPaths Discover()
    {
        string? root = null;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (Directory.Exists(Path.Combine(dir.FullName, "models", "configs")))
            {
                root = dir.FullName;
                break;
            }
        var data = Environment.GetEnvironmentVariable("SDAPP_DATA") is { Length: > 0 } d ? d : "data";
        return new AppPaths(root, Path.GetFullPath(data));
    }

    /// <summary>The model <c>generate</c> uses without <c>--model</c>: <c>models/demo</c> under the root, when it is there.</summary>
    public string? DefaultModel => Root is not null && Directory.Exists(Path.Combine(Root, "models", "demo")) ? Path.Combine(Root, "models", "demo") : null;

    /// <summary>Where <c>&lt;lora:NAME:w&gt;</c> in a prompt finds NAME.safetensors.</summary>
    public IReadOnlyList<string> LoraFolders => Under("lora");

    /// <summary>Textual-inversion embeddings, used when their file name appears in a prompt.</summary>
    public IReadOnlyList<string> EmbeddingFolders => Under("embeddings");

    /// <summary>Where the hashes of model files are kept between runs (A1111 keeps its cache.json for the same reason).</summary>
    public string HashCache => Path.Combine(Data, "cache", "hashes.json");

    /// <summary>Where <c>&lt;hypernet:NAME:w&gt;</c> in a prompt finds NAME.pt.</summary>
    public IReadOnlyList<string> HypernetworkFolders => Under("hypernetworks");

    /// <summary>Roots the model loader searches for models/configs and models/tokenizers besides the program's own.</summary>
    public IReadOnlyList<string> SearchRoots => [Data];

    private string[] Under(string kind) =>
        Root is null ? [Path.Combine(Data, "models", kind)] : [Path.Combine(Root, "models", kind), Path.Combine(Data, "models", kind)];
}
