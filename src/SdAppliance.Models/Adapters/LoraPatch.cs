using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Adapters;

/// <summary>A LoRA file at A1111's two strengths: <c>&lt;lora:name:te:unet&gt;</c> (one number sets both).</summary>
public sealed record LoraApplication(LoraFile File, double TextEncoderMultiplier, double UnetMultiplier)
{
    public LoraApplication(LoraFile file, double multiplier) : this(file, multiplier, multiplier) { }
}

/// <summary>
/// LoRA weights merged into a model's Linear and Conv2d weights for inference (as A1111 does at
/// the start of a generation), undone exactly on dispose: the original weights are kept aside,
/// not subtracted back, so any number of generations leave the model bit-identical.
/// </summary>
public sealed class LoraPatch : IDisposable
{
    private readonly List<(Tensor Weight, Tensor Original)> saved = [];
    private readonly HashSet<Tensor> patched = new(ReferenceEqualityComparer.Instance);

    private LoraPatch() { }

    /// <summary>LoRA modules that matched no module of the model (A1111 warns about these too).</summary>
    public List<string> Unmatched { get; } = [];

    /// <summary>How many module weights were changed.</summary>
    public int PatchedCount => saved.Count;

    /// <summary>
    /// Merges each (file, multiplier) into the models: <paramref name="targets"/> maps each
    /// <see cref="LoraTarget"/> the model has to its root module. <paramref name="alternateName"/>
    /// may give a second underscored name for a module path (kohya writes SDXL UNet names in the
    /// original ldm layout: input_blocks_4_1_…).
    /// </summary>
    public static LoraPatch Apply(IReadOnlyList<LoraApplication> loras, IReadOnlyDictionary<LoraTarget, Module> targets,
        Func<LoraTarget, string, string?>? alternateName = null)
    {
        var patch = new LoraPatch();
        try
        {
            var index = targets.ToDictionary(t => t.Key, t => IndexModules(t.Key, t.Value, alternateName));
            using var noGrad = Autograd.NoGrad();
            foreach (var application in loras)
                foreach (var lora in application.File.Modules)
                {
                    if (!index.TryGetValue(lora.Target, out var modules) || !modules.TryGetValue(lora.Name, out var weight))
                    {
                        patch.Unmatched.Add($"{application.File.Name}: {lora.Target} {lora.Name}");
                        continue;
                    }
                    var multiplier = lora.Target == LoraTarget.Unet ? application.UnetMultiplier : application.TextEncoderMultiplier;
                    if (multiplier != 0) patch.Merge(weight, lora, multiplier, application.File.Name);
                }
            return patch;
        }
        catch
        {
            patch.Dispose();
            throw;
        }
    }

    private static Dictionary<string, Tensor> IndexModules(LoraTarget target, Module root, Func<LoraTarget, string, string?>? alternateName)
    {
        var index = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (path, module) in root.NamedModules())
        {
            var weight = module switch
            {
                Linear linear => linear.Weight,
                Conv2d conv => conv.Weight,
                _ => null,
            };
            if (weight is null) continue;
            index[path.Replace('.', '_')] = weight;
            if (alternateName?.Invoke(target, path) is { } other) index[other] = weight;
        }
        return index;
    }

    private void Merge(Tensor weight, LoraModule lora, double multiplier, string fileName)
    {
        using var scope = Torch.Torch.NewDisposeScope();
        var down = lora.Down.To(weight.Device, DType.Float32).Flatten(1);
        var up = lora.Up.To(weight.Device, DType.Float32).Flatten(1);
        if (up.Shape[1] != down.Shape[0] || up.Shape[0] * down.Shape[1] != weight.NumEl)
            throw new InvalidDataException($"LoRA '{fileName}': module {lora.Name} has down [{string.Join(", ", lora.Down.Shape)}] and up [{string.Join(", ", lora.Up.Shape)}], which do not fit its weight [{string.Join(", ", weight.Shape)}]; the LoRA was made for another model");
        var delta = up.Matmul(down).Mul(multiplier * lora.Scale).Reshape(weight.Shape).To(weight.DType);
        if (patched.Add(weight))
            saved.Add((weight, weight.Clone().DetachFromDisposeScope()));
        weight.Add_(delta);
    }

    public void Dispose()
    {
        using var noGrad = Autograd.NoGrad();
        foreach (var (weight, original) in saved)
        {
            weight.Copy_(original);
            original.Dispose();
        }
        saved.Clear();
        patched.Clear();
    }
}
