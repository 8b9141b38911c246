using System.Globalization;
using System.Text.RegularExpressions;

namespace SdAppliance.Appliance.Generation;

/// <summary>
/// What the Generate form's pickers put into a prompt, in A1111's syntax: <c>&lt;lora:NAME:W&gt;</c>,
/// <c>&lt;hypernet:NAME:W&gt;</c>, and an embedding's token (its name, which the prompt reader finds as words).
/// </summary>
public static partial class PromptTags
{
    public static string Lora(string name, double weight) => $"<lora:{name}:{Weight(weight)}>";

    public static string Hypernetwork(string name, double weight) => $"<hypernet:{name}:{Weight(weight)}>";

    /// <summary>An embedding is used by writing its name, its token, into the prompt.</summary>
    public static string Embedding(string name) => name;

    /// <summary>
    /// <paramref name="prompt"/> with <paramref name="tag"/> at its end, after a space (A1111's separator); a
    /// <c>&lt;kind:NAME:...&gt;</c> tag for a network the prompt names already replaces that one (a new weight) instead,
    /// and a token already there is not added twice.
    /// </summary>
    public static string Insert(string prompt, string tag)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        ArgumentException.ThrowIfNullOrWhiteSpace(tag);
        if (NetworkTag().Match(tag) is { Success: true } network)
        {
            var same = new Regex($@"<{Regex.Escape(network.Groups["kind"].Value)}:{Regex.Escape(network.Groups["name"].Value)}(:[^>]*)?>", RegexOptions.CultureInvariant);
            if (same.IsMatch(prompt)) return same.Replace(prompt, tag.Replace("$", "$$", StringComparison.Ordinal), 1);
        }
        else if (new Regex($@"(?<![\w-]){Regex.Escape(tag)}(?![\w-])", RegexOptions.CultureInvariant).IsMatch(prompt))
        {
            return prompt;
        }
        var trimmed = prompt.TrimEnd();
        return trimmed.Length == 0 ? tag : $"{trimmed} {tag}";
    }

    private static string Weight(double weight) => weight.ToString("0.##", CultureInfo.InvariantCulture);

    [GeneratedRegex("^<(?<kind>[a-z]+):(?<name>[^:>]+)(:[^>]*)?>$", RegexOptions.CultureInvariant)]
    private static partial Regex NetworkTag();
}
