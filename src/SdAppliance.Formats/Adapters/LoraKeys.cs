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

/// <summary>How a module's weight delta is built from its tensors (LyCORIS's algorithm names).</summary>
public enum LoraAlgorithm
{
    /// <summary>LoRA and LoCon: <c>up · down</c>.</summary>
    Lora,

    /// <summary>LyCORIS LoHa: <c>(w1_a · w1_b) ⊙ (w2_a · w2_b)</c>, a Hadamard product of two low-rank products.</summary>
    Loha,

    /// <summary>LyCORIS LoKr: <c>w1 ⊗ w2</c>, a Kronecker product, either factor possibly low-rank.</summary>
    Lokr,
}

/// <summary>
/// The keys of one LoRA module in a file: <see cref="Name"/> is the module path with dots turned into
/// underscores (kohya's spelling), which every layout is brought to and which model paths are compared in.
/// <see cref="Parts"/> maps each weight's part name (<c>lora_down</c>, <c>lora_up</c>, <c>hada_w1_a</c>,
/// <c>lokr_w2</c>, …, as LyCORIS names them) to its key.
/// </summary>
/// <param name="Alpha">The key of the <c>.alpha</c> scalar, or null (alpha = rank, as in PEFT files).</param>
/// <param name="DoraScale">The key of DoRA's magnitude vector (<c>.dora_scale</c>), or null for no weight decomposition.</param>
public sealed record LoraModuleKeys(LoraTarget Target, string Name, LoraAlgorithm Algorithm, IReadOnlyDictionary<string, string> Parts,
    string? Alpha, string? DoraScale)
{
    /// <summary>The <c>lora_down</c> key (LoRA only).</summary>
    public string? Down => Parts.GetValueOrDefault(LoraKeys.DownPart);

    /// <summary>The <c>lora_up</c> key (LoRA only).</summary>
    public string? Up => Parts.GetValueOrDefault(LoraKeys.UpPart);
}

/// <summary>
/// How LoRA files name their tensors (FORMATS §4.1, §4.3): kohya sd-scripts (<c>lora_unet_….lora_down.weight</c>,
/// <c>.alpha</c>), diffusers (<c>unet.….lora.down.weight</c>, <c>lora_linear_layer</c>, attention <c>processor</c>
/// names), PEFT (<c>….lora_A.weight</c>/<c>lora_B</c>, alpha folded in) and LyCORIS under kohya's module names
/// (LoHa <c>.hada_w1_a</c>…<c>.hada_t2</c>, LoKr <c>.lokr_w1</c>…<c>.lokr_t2</c>, DoRA <c>.dora_scale</c>), as
/// A1111's built-in Lora extension and ComfyUI read them. The one place kohya's prefixes and LyCORIS's part names
/// are spelled: the reader parses them, the trainer names its modules and tensors with them.
/// </summary>
public static class LoraKeys
{
    public const string UnetPrefix = "lora_unet";
    public const string TextEncoderPrefix = "lora_te";
    public const string SdxlTextEncoder1Prefix = "lora_te1";
    public const string SdxlTextEncoder2Prefix = "lora_te2";

    /// <summary>kohya's key parts of a module's weights: <c>NAME.lora_down.weight</c>, <c>NAME.lora_up.weight</c>, <c>NAME.alpha</c>.</summary>
    public const string KohyaDown = ".lora_down.weight", KohyaUp = ".lora_up.weight", KohyaAlpha = ".alpha";

    /// <summary>The part names of a LoRA module's two matrices in <see cref="LoraModuleKeys.Parts"/> (whatever the layout spelled).</summary>
    public const string DownPart = "lora_down", UpPart = "lora_up";

    /// <summary>LyCORIS's LoHa tensors (<c>NAME.hada_w1_a</c>…), the Tucker cores only for convolutions trained with use_tucker.</summary>
    public const string HadaW1A = "hada_w1_a", HadaW1B = "hada_w1_b", HadaW2A = "hada_w2_a", HadaW2B = "hada_w2_b", HadaT1 = "hada_t1", HadaT2 = "hada_t2";

    /// <summary>LyCORIS's LoKr tensors: w1 whole or as w1_a·w1_b, w2 whole or as w2_a·w2_b (with the Tucker core t2).</summary>
    public const string LokrW1 = "lokr_w1", LokrW1A = "lokr_w1_a", LokrW1B = "lokr_w1_b", LokrW2 = "lokr_w2", LokrW2A = "lokr_w2_a", LokrW2B = "lokr_w2_b",
        LokrT2 = "lokr_t2";

    /// <summary>DoRA's magnitude vector (LyCORIS's <c>dora_wd</c>), beside any algorithm's tensors.</summary>
    public const string DoraScalePart = "dora_scale";

    private static readonly string[] LohaParts = [HadaW1A, HadaW1B, HadaW2A, HadaW2B, HadaT1, HadaT2];
    private static readonly string[] LokrParts = [LokrW1, LokrW1A, LokrW1B, LokrW2, LokrW2A, LokrW2B, LokrT2];

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

    // Suffixes of every module tensor in the layouts we read, longest first, with the part each one is.
    private static readonly (string Suffix, string Part)[] Suffixes =
    [
        (".lora_linear_layer.down.weight", DownPart), (".lora_linear_layer.up.weight", UpPart),
        (KohyaDown, DownPart), (KohyaUp, UpPart),
        (".lora.down.weight", DownPart), (".lora.up.weight", UpPart),
        (".lora_A.weight", DownPart), (".lora_B.weight", UpPart),
        ("_lora.down.weight", DownPart), ("_lora.up.weight", UpPart),
        .. LohaParts.Concat(LokrParts).Append(DoraScalePart).Select(p => ("." + p, p)),
        (KohyaAlpha, "alpha"),
    ];

    private static readonly (string Prefix, LoraTarget Target)[] Prefixes =
    [
        (UnetPrefix + "_", LoraTarget.Unet), (SdxlTextEncoder1Prefix + "_", LoraTarget.TextEncoder), (SdxlTextEncoder2Prefix + "_", LoraTarget.TextEncoder2),
        (TextEncoderPrefix + "_", LoraTarget.TextEncoder), ("unet.", LoraTarget.Unet), ("text_encoder_2.", LoraTarget.TextEncoder2),
        ("text_encoder.", LoraTarget.TextEncoder), ("base_model.model.", LoraTarget.Unet),
    ];

    private static readonly Regex Processor = new(@"\.processor\.(to_q|to_k|to_v|to_out)(_lora)?$", RegexOptions.CultureInvariant);

    /// <summary>
    /// Groups a LoRA file's tensor names into modules, in the order each module first appears, and tells each
    /// module's algorithm by the parts it has.
    /// </summary>
    /// <exception cref="UserInputException">No module keys at all, a key of an algorithm we do not read (OFT, IA³, GLoRA…),
    /// or a module whose parts are incomplete or mixed, naming the file and the module.</exception>
    public static List<LoraModuleKeys> Modules(string path, IEnumerable<string> keys)
    {
        var byModule = new Dictionary<(LoraTarget, string), Dictionary<string, string>>();
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
            if (!byModule.TryGetValue(module, out var parts))
            {
                byModule[module] = parts = new Dictionary<string, string>(StringComparer.Ordinal);
                order.Add(module);
            }
            parts[match.Part] = key;
        }

        // Other LyCORIS algorithms write these parts under the same module names.
        var lycoris = unknown.FirstOrDefault(k => k.StartsWith(UnetPrefix + "_", StringComparison.Ordinal) || k.StartsWith(TextEncoderPrefix, StringComparison.Ordinal));
        if (lycoris is not null)
            throw new UserInputException(path, $"holds '{lycoris}', a tensor of an adapter we do not read (LyCORIS OFT, IA3, GLoRA, full or norm modules); LoRA, LoCon, LoHa, LoKr and DoRA files are supported");
        if (order.Count == 0)
            throw new UserInputException(path, $"holds no LoRA weights (expected keys ending in .lora_down.weight/.lora_up.weight, .lora.down/.up.weight, .lora_A/.lora_B.weight, or LyCORIS's .hada_w1_a/.lokr_w1)");
        var modules = new List<LoraModuleKeys>(order.Count);
        foreach (var (target, name) in order)
        {
            var parts = byModule[(target, name)];
            var alpha = parts.Remove("alpha", out var a) ? a : null;
            var dora = parts.Remove(DoraScalePart, out var d) ? d : null;
            modules.Add(new LoraModuleKeys(target, name, AlgorithmOf(path, name, parts), parts, alpha, dora));
        }
        return modules;
    }

    // A module is one algorithm, with every part that algorithm needs (as A1111's and ComfyUI's loaders require).
    private static LoraAlgorithm AlgorithmOf(string path, string name, Dictionary<string, string> parts)
    {
        bool Has(string part) => parts.ContainsKey(part);
        var lora = Has(DownPart) || Has(UpPart);
        var loha = LohaParts.Any(Has);
        var lokr = LokrParts.Any(Has);
        if ((lora ? 1 : 0) + (loha ? 1 : 0) + (lokr ? 1 : 0) > 1)
            throw new UserInputException(path, $"module '{name}' mixes the tensors of two algorithms ({string.Join(", ", parts.Keys.Order(StringComparer.Ordinal))}); it cannot be read");
        if (loha)
        {
            var missing = new[] { HadaW1A, HadaW1B, HadaW2A, HadaW2B }.Where(p => !Has(p)).ToList();
            if (missing.Count > 0) throw new UserInputException(path, $"LoHa module '{name}' has no {string.Join(", ", missing)}");
            if (Has(HadaT1) != Has(HadaT2)) throw new UserInputException(path, $"LoHa module '{name}' has only one of hada_t1 and hada_t2 (a Tucker LoHa needs both)");
            return LoraAlgorithm.Loha;
        }
        if (lokr)
        {
            if (!Has(LokrW1) && !(Has(LokrW1A) && Has(LokrW1B)))
                throw new UserInputException(path, $"LoKr module '{name}' has neither lokr_w1 nor both lokr_w1_a and lokr_w1_b");
            if (!Has(LokrW2) && !(Has(LokrW2A) && Has(LokrW2B)))
                throw new UserInputException(path, $"LoKr module '{name}' has neither lokr_w2 nor both lokr_w2_a and lokr_w2_b");
            return LoraAlgorithm.Lokr;
        }
        if (!Has(DownPart) || !Has(UpPart))
            throw new UserInputException(path, $"module '{name}' has {(Has(DownPart) ? "no up" : "no down")} weight");
        return LoraAlgorithm.Lora;
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
