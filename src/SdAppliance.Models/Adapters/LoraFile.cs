using System.Text.RegularExpressions;
using SdAppliance.Formats;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;
using SdAppliance.Torch.Serialization;


namespace SdAppliance.Models.Adapters;

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
/// One patched module: <c>W' = W + multiplier · (alpha / rank) · up · down</c>. <see cref="Name"/>
/// is the module path with dots turned into underscores (kohya's spelling), which every
/// format can be brought to and which our modules' paths are compared in.
/// </summary>
public sealed record LoraModule(LoraTarget Target, string Name, Tensor Down, Tensor Up, double? Alpha)
{
    public long Rank => Down.Shape[0];

    public double Scale => (Alpha is { } a && a != 0 ? a : Rank) / Rank;
}

/// <summary>
/// A LoRA file in any of the layouts users bring: kohya sd-scripts (<c>lora_unet_…​.lora_down.weight</c>,
/// <c>.alpha</c>), diffusers (<c>unet.….lora.down.weight</c>, <c>lora_linear_layer</c>, attention
/// <c>processor</c> names) and PEFT (<c>….lora_A.weight</c>/<c>lora_B</c>, alpha folded in).
/// </summary>
public sealed class LoraFile : IDisposable
{
    private readonly SafetensorsReader reader;

    private LoraFile(string path, SafetensorsReader reader, IReadOnlyList<LoraModule> modules)
    {
        Path = path;
        this.reader = reader;
        Modules = modules;
    }

    public string Path { get; }

    /// <summary>The file name without extension, as A1111's <c>&lt;lora:NAME:w&gt;</c> refers to it.</summary>
    public string Name => System.IO.Path.GetFileNameWithoutExtension(Path);

    public IReadOnlyList<LoraModule> Modules { get; }

    public IReadOnlyDictionary<string, string> Metadata => reader.Metadata;

    public static LoraFile Load(string path)
    {
        if (!File.Exists(path)) throw new UserInputException(path, "the LoRA file does not exist");
        var reader = SafetensorsReader.Open(path);
        try
        {
            return new LoraFile(path, reader, Parse(path, reader));
        }
        catch
        {
            reader.Dispose();
            throw;
        }
    }

    private sealed class Parts
    {
        public Tensor? Down, Up;
        public double? Alpha;
    }

    // Suffixes of the down/up/alpha tensors in every layout we read, longest first.
    private static readonly (string Suffix, char Part)[] Suffixes =
    [
        (".lora_linear_layer.down.weight", 'd'), (".lora_linear_layer.up.weight", 'u'),
        (".lora_down.weight", 'd'), (".lora_up.weight", 'u'),
        (".lora.down.weight", 'd'), (".lora.up.weight", 'u'),
        (".lora_A.weight", 'd'), (".lora_B.weight", 'u'),
        ("_lora.down.weight", 'd'), ("_lora.up.weight", 'u'),
        (".alpha", 'a'),
    ];

    private static List<LoraModule> Parse(string path, SafetensorsReader reader)
    {
        var byModule = new Dictionary<(LoraTarget, string), Parts>();
        var unknown = new List<string>();
        foreach (var key in reader.Names)
        {
            var match = Suffixes.FirstOrDefault(s => key.EndsWith(s.Suffix, StringComparison.Ordinal));
            if (match.Suffix is null)
            {
                unknown.Add(key);
                continue;
            }
            var (target, name) = ModuleOf(key[..^match.Suffix.Length]);
            if (!byModule.TryGetValue((target, name), out var parts)) byModule[(target, name)] = parts = new Parts();
            switch (match.Part)
            {
                case 'd': parts.Down = reader.Get(key); break;
                case 'u': parts.Up = reader.Get(key); break;
                default:
                    using (var alpha = reader.Get(key)) parts.Alpha = WeightChecks.Scalar(path, key, alpha);
                    break;
            }
        }

        var dora = unknown.FirstOrDefault(k => k.Contains("dora_scale", StringComparison.Ordinal) || k.Contains("hada_", StringComparison.Ordinal) || k.Contains("lokr_", StringComparison.Ordinal));
        if (dora is not null)
            throw new UserInputException(path, $"is a LyCORIS/DoRA file (key '{dora}'); only plain LoRA and LoCon are supported");
        if (byModule.Count == 0)
            throw new UserInputException(path, "holds no LoRA weights (expected keys ending in .lora_down.weight/.lora_up.weight, .lora.down/.up.weight or .lora_A/.lora_B.weight)");

        var modules = new List<LoraModule>(byModule.Count);
        foreach (var ((target, name), parts) in byModule)
        {
            if (parts.Down is null || parts.Up is null)
                throw new UserInputException(path, $"module '{name}' has {(parts.Down is null ? "no down" : "no up")} weight");
            WeightChecks.RequireFinite(path, $"{name} down", parts.Down);
            WeightChecks.RequireFinite(path, $"{name} up", parts.Up);
            modules.Add(new LoraModule(target, name, parts.Down, parts.Up, parts.Alpha));
        }
        return modules;
    }

    private static readonly Regex Processor = new(@"\.processor\.(to_q|to_k|to_v|to_out)(_lora)?$", RegexOptions.CultureInvariant);

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

    private static readonly (string Prefix, LoraTarget Target)[] Prefixes =
    [
        ("lora_unet_", LoraTarget.Unet), ("lora_te1_", LoraTarget.TextEncoder), ("lora_te2_", LoraTarget.TextEncoder2),
        ("lora_te_", LoraTarget.TextEncoder), ("unet.", LoraTarget.Unet), ("text_encoder_2.", LoraTarget.TextEncoder2),
        ("text_encoder.", LoraTarget.TextEncoder), ("base_model.model.", LoraTarget.Unet),
    ];

    public void Dispose()
    {
        foreach (var m in Modules)
        {
            m.Down.Dispose();
            m.Up.Dispose();
        }
        reader.Dispose();
    }
}
