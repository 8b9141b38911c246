using System.Text.RegularExpressions;

namespace SdAppliance.Formats.Adapters;

/// <summary>Which model a LoRA module patches.</summary>
public enum LoraTarget
{
    Unet,

    /// <summary>The (first) text encoder: kohya's <c>lora_te</c> / <c>lora_te1</c>, diffusers' <c>text_encoder</c>.</summary>
    TextEncoder,

    /// <summary>SDXL's second text encoder: kohya's <c>lora_te2</c>, diffusers' <c>text_encoder_2</c>.</summary>
    TextEncoder2,
}

/// <summary>
/// The keys of one LoRA module in a file: <see cref="Name"/> is the module path with dots turned into
/// underscores (kohya's spelling), which every layout is brought to and which model paths are compared in.
/// </summary>
/// <param name="Alpha">The key of the <c>.alpha</c> scalar, or null (alpha = rank, as in PEFT files).</param>
public sealed record LoraModuleKeys(LoraTarget Target, string Name, string Down, string Up, string? Alpha);

/// <summary>
/// How LoRA files name their tensors (FORMATS §4.1, §4.3): kohya sd-scripts (<c>lora_unet_….lora_down.weight</c>,
/// <c>.alpha</c>), diffusers (<c>unet.….lora.down.weight</c>, <c>lora_linear_layer</c>, attention <c>processor</c>
/// names) and PEFT (<c>….lora_A.weight</c>/<c>lora_B</c>, alpha folded in). The one place kohya's prefixes are
/// spelled: the reader parses them, the trainer names its modules with <see cref="KohyaName"/>.
/// </summary>
public static class LoraKeys
{
    public const string UnetPrefix = "lora_unet";
    public const string TextEncoderPrefix = "lora_te";
    public const string SdxlTextEncoder1Prefix = "lora_te1";
    public const string SdxlTextEncoder2Prefix = "lora_te2";

    /// <summary>kohya's key parts of a module's weights: <c>NAME.lora_down.weight</c>, <c>NAME.lora_up.weight</c>, <c>NAME.alpha</c>.</summary>
    public const string KohyaDown = ".lora_down.weight", KohyaUp = ".lora_up.weight", KohyaAlpha = ".alpha";

    /// <summary>
    /// kohya's module name: the prefix of <paramref name="target"/> (<c>lora_unet</c>; <c>lora_te</c>, or for SDXL
    /// <c>lora_te1</c>/<c>lora_te2</c>), then the module path with dots turned into underscores.
    /// </summary>
    public static string KohyaName(LoraTarget target, bool isSdxl, string modulePath)
    {
        var prefix = target switch
        {
            LoraTarget.Unet => UnetPrefix,
            LoraTarget.TextEncoder => isSdxl ? SdxlTextEncoder1Prefix : TextEncoderPrefix,
            _ => SdxlTextEncoder2Prefix,
        };
        return prefix + "_" + modulePath.Replace('.', '_');
    }

    // Suffixes of the down/up/alpha tensors in every layout we read, longest first.
    private static readonly (string Suffix, char Part)[] Suffixes =
    [
        (".lora_linear_layer.down.weight", 'd'), (".lora_linear_layer.up.weight", 'u'),
        (KohyaDown, 'd'), (KohyaUp, 'u'),
        (".lora.down.weight", 'd'), (".lora.up.weight", 'u'),
        (".lora_A.weight", 'd'), (".lora_B.weight", 'u'),
        ("_lora.down.weight", 'd'), ("_lora.up.weight", 'u'),
        (KohyaAlpha, 'a'),
    ];

    private static readonly (string Prefix, LoraTarget Target)[] Prefixes =
    [
        (UnetPrefix + "_", LoraTarget.Unet), (SdxlTextEncoder1Prefix + "_", LoraTarget.TextEncoder), (SdxlTextEncoder2Prefix + "_", LoraTarget.TextEncoder2),
        (TextEncoderPrefix + "_", LoraTarget.TextEncoder), ("unet.", LoraTarget.Unet), ("text_encoder_2.", LoraTarget.TextEncoder2),
        ("text_encoder.", LoraTarget.TextEncoder), ("base_model.model.", LoraTarget.Unet),
    ];

    private static readonly Regex Processor = new(@"\.processor\.(to_q|to_k|to_v|to_out)(_lora)?$", RegexOptions.CultureInvariant);

    /// <summary>
    /// Groups a LoRA file's tensor names into modules, in the order each module first appears.
    /// </summary>
    /// <exception cref="NotSupportedException">A LyCORIS/DoRA file.</exception>
    /// <exception cref="InvalidDataException">No LoRA keys at all, or a module without its down or up weight.</exception>
    public static List<LoraModuleKeys> Modules(string path, IEnumerable<string> keys)
    {
        var byModule = new Dictionary<(LoraTarget, string), (string? Down, string? Up, string? Alpha)>();
        var order = new List<(LoraTarget, string)>();
        var unknown = new List<string>();
        foreach (var key in keys)
        {
            var match = Suffixes.FirstOrDefault(s => key.EndsWith(s.Suffix, StringComparison.Ordinal));
            if (match.Suffix is null)
            {
                unknown.Add(key);
                continue;
            }
            var module = ModuleOf(key[..^match.Suffix.Length]);
            if (!byModule.TryGetValue(module, out var parts)) order.Add(module);
            byModule[module] = match.Part switch
            {
                'd' => parts with { Down = key },
                'u' => parts with { Up = key },
                _ => parts with { Alpha = key },
            };
        }

        var lycoris = unknown.FirstOrDefault(k => k.Contains("dora_scale", StringComparison.Ordinal) || k.Contains("hada_", StringComparison.Ordinal) || k.Contains("lokr_", StringComparison.Ordinal));
        if (lycoris is not null)
            throw new UserInputException(path, $"is a LyCORIS/DoRA file (key '{lycoris}'); only plain LoRA and LoCon are supported");
        if (order.Count == 0)
            throw new UserInputException(path, $"holds no LoRA weights (expected keys ending in .lora_down.weight/.lora_up.weight, .lora.down/.up.weight or .lora_A/.lora_B.weight)");
        var modules = new List<LoraModuleKeys>(order.Count);
        foreach (var (target, name) in order)
        {
            var (down, up, alpha) = byModule[(target, name)];
            if (down is null || up is null)
                throw new UserInputException(path, $"module '{name}' has {(down is null ? "no down" : "no up")} weight");
            modules.Add(new LoraModuleKeys(target, name, down, up, alpha));
        }
        return modules;
    }

    /// <summary>Splits a key's module part into the model it patches and its underscored path.</summary>
    private static (LoraTarget, string) ModuleOf(string module)
    {
        // diffusers' attention-processor LoRA names the processor, not the projection it patches.
        module = Processor.Replace(module, m => "." + (m.Groups[1].Value == "to_out" ? "to_out.0" : m.Groups[1].Value));
        foreach (var (prefix, target) in Prefixes)
            if (module.StartsWith(prefix, StringComparison.Ordinal))
                return (target, module[prefix.Length..].Replace('.', '_'));
        return (LoraTarget.Unet, module.Replace('.', '_'));
    }
}
