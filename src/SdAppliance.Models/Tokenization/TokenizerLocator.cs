using System.Text;
using SdAppliance.Formats;

namespace SdAppliance.Models.Tokenization;

/// <summary>
/// Finds the tokenizer folder of a model. Diffusers folders carry theirs (<c>tokenizer/</c>, and SDXL's
/// second one in <c>tokenizer_2/</c>); single-file checkpoints carry none, so the files are looked for next to
/// the checkpoint and then in <c>models/tokenizers/NAME/</c> under each search root (the repository, the
/// data folder).
/// </summary>
public static class TokenizerLocator
{
    public static readonly string[] RequiredFiles = ["vocab.json", "merges.txt"];

    /// <summary>
    /// The first folder holding <see cref="RequiredFiles"/>, among: <paramref name="modelPath"/>/<paramref name="subfolder"/>
    /// (for a file: its folder's <paramref name="subfolder"/>), then <c>ROOT/models/tokenizers/</c><paramref name="name"/>
    /// for each of <paramref name="searchRoots"/> in order.
    /// </summary>
    /// <param name="name">The tokenizer's name for the shared folder, e.g. "clip-vit-large-patch14".</param>
    /// <param name="subfolder">"tokenizer", or "tokenizer_2" for SDXL's second text encoder.</param>
    /// <exception cref="FileNotFoundException">No candidate is complete; the message lists what to put where.</exception>
    public static string Find(string modelPath, string name, IEnumerable<string> searchRoots, string subfolder = "tokenizer")
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        var modelFolder = Directory.Exists(modelPath) ? modelPath : Path.GetDirectoryName(Path.GetFullPath(modelPath)) ?? ".";
        var candidates = new List<string> { Path.Combine(modelFolder, subfolder) };
        candidates.AddRange(searchRoots.Select(root => Path.Combine(root, "models", "tokenizers", name)));

        foreach (var folder in candidates)
            if (RequiredFiles.All(f => File.Exists(Path.Combine(folder, f))))
                return folder;

        var message = new StringBuilder();
        message.Append($"no tokenizer '{name}' found for this model. ");
        message.Append($"Put {string.Join(" and ", RequiredFiles)} (from the model's Hugging Face '{subfolder}' folder; ");
        message.Append("special_tokens_map.json too where it sets a pad token) into one of these folders:");
        foreach (var folder in candidates)
        {
            message.Append($"{Environment.NewLine}  {folder}{Path.DirectorySeparatorChar}");
            var missing = RequiredFiles.Where(f => !File.Exists(Path.Combine(folder, f))).ToList();
            if (Directory.Exists(folder) && missing.Count < RequiredFiles.Length)
                message.Append($" (exists, missing {string.Join(", ", missing)})");
        }
        throw new UserInputException(modelPath, message.ToString());
    }
}
