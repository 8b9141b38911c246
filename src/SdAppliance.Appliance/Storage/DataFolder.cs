namespace SdAppliance.Appliance.Storage;

/// <summary>
/// The one data folder and what lives in it: <c>models/</c> (base models, <c>lora/</c>, <c>embeddings/</c>,
/// <c>hypernetworks/</c>), <c>datasets/</c>, <c>runs/</c>, <c>outputs/</c> (one folder per day), <c>jobs/</c>, <c>cache/</c>
/// and the database; and the application root (the repository or install folder holding <c>models/configs</c> and
/// <c>models/demo</c>). The web host, the services and the CLI all find their folders here.
/// </summary>
/// <param name="path">The data folder (it need not exist yet; <see cref="Create"/> makes it).</param>
/// <param name="applicationRoot">The application root, or null when the program runs outside one.</param>
public sealed class DataFolder(string path, string? applicationRoot = null)
{
    /// <summary>The environment variable that moves the data folder (<c>--data</c> overrides it).</summary>
    public const string EnvironmentVariable = "SDAPP_DATA";

    /// <summary>The data folder, as a full path.</summary>
    public string FullPath { get; } = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));

    /// <summary>The application root, or null when the program runs outside one.</summary>
    public string? ApplicationRoot { get; } = applicationRoot is null ? null : Path.TrimEndingDirectorySeparator(Path.GetFullPath(applicationRoot));

    /// <summary>
    /// The data folder <paramref name="dataOption"/> names (<c>--data</c>), else <c>$SDAPP_DATA</c>, else <c>./data</c>; and the
    /// application root, found upwards from the program.
    /// </summary>
    public static DataFolder Discover(string? dataOption = null)
    {
        var data = dataOption is { Length: > 0 } given ? given
            : Environment.GetEnvironmentVariable(EnvironmentVariable) is { Length: > 0 } fromEnvironment ? fromEnvironment
            : "data";
        return new DataFolder(data, FindApplicationRoot());
    }

    /// <summary>The folder upwards from the program that holds <c>models/configs</c>, or null.</summary>
    public static string? FindApplicationRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (Directory.Exists(Path.Combine(dir.FullName, "models", "configs")))
                return dir.FullName;
        return null;
    }

    /// <summary>Base models: diffusers folders, <c>.safetensors</c> and <c>.ckpt</c> files.</summary>
    public string Models => Path.Combine(FullPath, "models");

    public string Loras => Path.Combine(Models, "lora");

    public string Embeddings => Path.Combine(Models, "embeddings");

    public string Hypernetworks => Path.Combine(Models, "hypernetworks");

    /// <summary>VAEs used in place of a model's own (A1111's <c>models/VAE</c>, its <c>sd_vae</c> setting): files and diffusers VAE folders, put there by hand.</summary>
    public string Vaes => Path.Combine(Models, "vae");

    /// <summary>Image taggers for auto-captioning, one folder each (a WD14 tagger: <c>model.onnx</c> and <c>selected_tags.csv</c>); made by whoever puts the first there.</summary>
    public string Taggers => Path.Combine(Models, "taggers");

    /// <summary>Training datasets, one folder each in kohya's layout.</summary>
    public string Datasets => Path.Combine(FullPath, "datasets");

    /// <summary>Training runs, one folder each (config, log, checkpoints, samples).</summary>
    public string Runs => Path.Combine(FullPath, "runs");

    /// <summary>Generated images, one folder per day (<see cref="OutputsOn"/>).</summary>
    public string Outputs => Path.Combine(FullPath, "outputs");

    /// <summary>Each job's own folder.</summary>
    public string Jobs => Path.Combine(FullPath, "jobs");

    /// <summary>What can be computed again (hashes, model descriptions).</summary>
    public string Cache => Path.Combine(FullPath, "cache");

    /// <summary>The SQLite database file.</summary>
    public string Database => Path.Combine(FullPath, "appliance.db");

    /// <summary>A file inside the data folder as events and results name it: relative, with forward slashes.</summary>
    public string Relative(string path) => Path.GetRelativePath(FullPath, path).Replace(Path.DirectorySeparatorChar, '/');

    /// <summary>The web host's data-protection keys (they sign the sign-in and antiforgery cookies): kept, so a restart signs nobody out.</summary>
    public string Keys => Path.Combine(FullPath, "keys");

    /// <summary>Where the hashes of model files are kept between runs (A1111 keeps its cache.json for the same reason).</summary>
    public string HashCache => Path.Combine(Cache, "hashes.json");

    /// <summary>The folder of one day's outputs, <c>outputs/yyyy-MM-dd</c> (the day in UTC).</summary>
    public string OutputsOn(DateTime utc) => Path.Combine(Outputs, utc.ToUniversalTime().ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture));

    /// <summary>The demo model, <c>models/demo</c> under the application root, when it is there.</summary>
    public string? DemoModel => ApplicationRoot is not null && Directory.Exists(Path.Combine(ApplicationRoot, "models", "demo"))
        ? Path.Combine(ApplicationRoot, "models", "demo") : null;

    /// <summary>Where <c>&lt;lora:NAME:w&gt;</c> in a prompt finds NAME.safetensors: the application root's, then the data folder's.</summary>
    public IReadOnlyList<string> LoraFolders => Under("lora");

    /// <summary>Textual-inversion embeddings, used when their file name appears in a prompt.</summary>
    public IReadOnlyList<string> EmbeddingFolders => Under("embeddings");

    /// <summary>Where <c>&lt;hypernet:NAME:w&gt;</c> in a prompt finds NAME.pt.</summary>
    public IReadOnlyList<string> HypernetworkFolders => Under("hypernetworks");

    /// <summary>Where VAEs are found by name: the application root's <c>models/vae</c>, then the data folder's.</summary>
    public IReadOnlyList<string> VaeFolders => Under("vae");

    /// <summary>Where taggers are found by name: the application root's <c>models/taggers</c>, then the data folder's.</summary>
    public IReadOnlyList<string> TaggerFolders => Under("taggers");

    /// <summary>Roots the model loader searches for models/configs and models/tokenizers besides the program's own.</summary>
    public IReadOnlyList<string> SearchRoots => [FullPath];

    /// <summary>Creates the data folder and every folder in it that is missing.</summary>
    public DataFolder Create()
    {
        foreach (var folder in (string[])[FullPath, Models, Loras, Embeddings, Hypernetworks, Datasets, Runs, Outputs, Jobs, Cache])
            Directory.CreateDirectory(folder);
        return this;
    }

    private string[] Under(string kind) =>
        ApplicationRoot is null ? [Path.Combine(FullPath, "models", kind)] : [Path.Combine(ApplicationRoot, "models", kind), Path.Combine(FullPath, "models", kind)];
}
