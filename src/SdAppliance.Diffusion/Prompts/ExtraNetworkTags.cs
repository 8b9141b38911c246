using System.Globalization;
using System.Text.RegularExpressions;
using SdAppliance.Formats;

namespace SdAppliance.Diffusion.Prompts;

/// <summary>
/// A1111's "extra network" tag <c>&lt;kind:arg:arg...&gt;</c> in a prompt, which names an adapter to apply:
/// <c>&lt;lora:name:0.8&gt;</c>, <c>&lt;lora:name&gt;</c> (multiplier 1), <c>&lt;hypernet:name:0.5&gt;</c>.
/// </summary>
/// <param name="Kind">The tag's first word, e.g. "lora", "lyco", "hypernet".</param>
/// <param name="Multiplier">The strength; for a LoRA, the text encoder's (A1111's <c>te</c>).</param>
/// <param name="UnetMultiplier">A LoRA's UNet strength (the third argument or <c>unet=</c>; defaults to
/// <paramref name="Multiplier"/>); equal to <paramref name="Multiplier"/> for other kinds.</param>
/// <param name="Positional">The colon-separated arguments without '=' (the name first).</param>
/// <param name="Named">Arguments written <c>key=value</c>.</param>
public sealed record ExtraNetworkTag(
    string Kind,
    string Name,
    double Multiplier,
    double UnetMultiplier,
    IReadOnlyList<string> Positional,
    IReadOnlyDictionary<string, string> Named)
{
    /// <summary>The kind of A1111's hypernetwork tags.</summary>
    public const string Hypernetwork = "hypernet";

    public bool IsLora => Kind is "lora" or "lyco";
}

/// <summary>A prompt with its extra-network tags taken out, and the tags in the order they were written.</summary>
public sealed record ExtractedPrompt(string Text, IReadOnlyList<ExtraNetworkTag> Tags);

public static partial class ExtraNetworkTags
{
    // A1111's re_extra_net (modules/extra_networks.py).
    [GeneratedRegex(@"<(\w+):([^>]+)>")]
    private static partial Regex ExtraNetwork();

    /// <summary>
    /// Removes every <c>&lt;kind:args&gt;</c> tag from <paramref name="prompt"/> (A1111 removes them all, known
    /// kinds or not, leaving the surrounding text as it was) and returns them parsed.
    /// </summary>
    /// <exception cref="UserInputException">A multiplier is not a number.</exception>
    public static ExtractedPrompt Extract(string prompt)
    {
        var tags = new List<ExtraNetworkTag>();
        var text = ExtraNetwork().Replace(prompt, m =>
        {
            tags.Add(Create(m.Groups[1].Value, m.Groups[2].Value.Split(':'), m.Value));
            return "";
        });
        return new ExtractedPrompt(text, tags);
    }

    private static ExtraNetworkTag Create(string kind, string[] items, string tag)
    {
        // ExtraNetworkParams: an item with exactly one '=' is named, everything else positional.
        var positional = new List<string>();
        var named = new Dictionary<string, string>();
        foreach (var item in items)
        {
            var parts = item.Split('=', 3);
            if (parts.Length == 2) named[parts[0]] = parts[1];
            else positional.Add(item);
        }

        double multiplier, unetMultiplier;
        string name;
        if (kind is "lora" or "lyco")
        {
            // extra_networks_lora.activate: te = positional[1] or te=, unet = positional[2] or unet= or te.
            name = positional.Count > 0 ? positional[0]
                : throw new UserInputException("prompt", $"the tag {tag} names no LoRA (its first argument has '=')");
            multiplier = positional.Count > 1 ? Number(positional[1], tag) : 1.0;
            if (named.TryGetValue("te", out var te)) multiplier = Number(te, tag);
            unetMultiplier = positional.Count > 2 ? Number(positional[2], tag) : multiplier;
            if (named.TryGetValue("unet", out var unet)) unetMultiplier = Number(unet, tag);
        }
        else
        {
            // Hypernetworks and the rest: name and multiplier are the first two items.
            name = items[0];
            multiplier = items.Length > 1 ? Number(items[1], tag) : 1.0;
            unetMultiplier = multiplier;
        }
        return new ExtraNetworkTag(kind, name, multiplier, unetMultiplier, positional, named);
    }

    private static double Number(string value, string tag) =>
        double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var v)
            ? v
            : throw new UserInputException("prompt", $"'{value}' in the tag {tag} is not a number");
}
