using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.Loading;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Unet;
using SdAppliance.Models.Vae;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Conversion;

/// <summary>
/// Whether the tensors a conversion writes have the shapes the model's configs give. A copy of names and bytes
/// would otherwise carry a damaged or foreign tensor into a file that then fails to load (or loads into the wrong
/// layer). The expected shapes come from the modules themselves, built on the meta device: shapes without memory.
/// </summary>
internal static class ArchitectureFit
{
    /// <summary>Throws <see cref="UserInputException"/> naming <paramref name="input"/> and the first tensors whose shape the configs in <paramref name="configs"/> contradict.</summary>
    /// <param name="tensors">Every tensor in diffusers naming (component and name) with its shape.</param>
    public static void Check(string input, string configs, IReadOnlyDictionary<TensorKey, IReadOnlyList<long>> tensors)
    {
        var components = tensors.Keys.Select(k => k.Component).Distinct().ToList();
        var problems = new List<string>();
        foreach (var component in components)
        {
            var expected = ExpectedShapes(configs, component);
            if (expected is null) continue;
            foreach (var (key, shape) in tensors.Where(t => t.Key.Component == component))
                if (expected.TryGetValue(key.Name, out var wanted) && !wanted.SequenceEqual(shape))
                    problems.Add($"{component} {key.Name} is [{string.Join(", ", shape)}] in the file, [{string.Join(", ", wanted)}] in the config");
        }
        if (problems.Count > 0)
            throw new UserInputException(input,
                $"{problems.Count} tensor(s) do not fit the architecture of '{configs}': {string.Join("; ", problems.Take(5))}{(problems.Count > 5 ? "; ..." : "")}",
                "the file is damaged or is another model; give the model's own diffusers configs (config_directory)");
    }

    private static Dictionary<string, long[]>? ExpectedShapes(string configs, string component)
    {
        var file = Path.Combine(configs, component, "config.json");
        if (!File.Exists(file)) return null;
        var options = new ModuleOptions(Device.Meta);
        using Module module = component switch
        {
            ModelComponents.Unet => new UNet2DConditionModel(DiffusersConfig.Load<UNet2DConditionConfig>(file), options),
            ModelComponents.Vae => new AutoencoderKL(DiffusersConfig.Load<AutoencoderKLConfig>(file), options),
            ModelComponents.TextEncoder => new ClipTextModel(ClipTextConfig.Load(file), withProjection: false, Device.Meta),
            ModelComponents.TextEncoder2 => new ClipTextModel(ClipTextConfig.Load(file), withProjection: true, Device.Meta),
            _ => throw new ArgumentException($"unknown component '{component}'", nameof(component)),
        };
        using var state = module.StateDict();
        return state.ToDictionary(kv => kv.Key, kv => kv.Value.Shape.ToArray());
    }
}
