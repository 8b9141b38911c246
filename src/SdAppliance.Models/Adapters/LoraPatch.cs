using SdAppliance.Formats;
using SdAppliance.Formats.Adapters;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Adapters;

/// <summary>A LoRA file at A1111's two strengths: <c>&lt;lora:name:te:unet&gt;</c> (one number sets both).</summary>
public sealed record LoraApplication(LoraFile File, double TextEncoderMultiplier, double UnetMultiplier)
{
    public LoraApplication(LoraFile file, double multiplier) : this(file, multiplier, multiplier) { }
}

/// <summary>What <see cref="LoraPatch.MergePermanently"/> did: modules merged, and the file's modules that match no layer.</summary>
public sealed record LoraMergeResult(int MergedModules, IReadOnlyList<string> Unmatched);

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

    /// <summary>LoRA modules that matched no module of the model (A1111 warns about these too), as "FILE: TARGET NAME".</summary>
    public IReadOnlyList<string> Unmatched => [.. UnmatchedModules.Select(u => $"{u.File.Name}: {u.Module.Target} {u.Module.Name}")];

    /// <summary>The modules behind <see cref="Unmatched"/>, with their files.</summary>
    public List<(LoraFile File, LoraModule Module)> UnmatchedModules { get; } = [];

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
            var index = Index(targets, alternateName);
            using var noGrad = Autograd.NoGrad();
            foreach (var application in loras)
                foreach (var lora in application.File.Modules)
                {
                    if (!index.TryGetValue(lora.Target, out var modules) || !modules.TryGetValue(lora.Name, out var weight))
                    {
                        patch.UnmatchedModules.Add((application.File, lora));
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

    /// <summary>
    /// Adds <paramref name="file"/>'s modules, at <paramref name="multiplier"/>, to the matching weights for
    /// good: <see cref="Apply"/>'s matching and arithmetic, but nothing is kept to undo it (no copy of the
    /// weights is made). Every module is matched and checked against its weight before any weight
    /// changes, and a file that matches no layer at all is refused.
    /// </summary>
    /// <exception cref="InvalidDataException">No module matches a layer, or one does not fit its weight.</exception>
    public static LoraMergeResult MergePermanently(LoraFile file, double multiplier, IReadOnlyDictionary<LoraTarget, Module> targets,
        Func<LoraTarget, string, string?>? alternateName = null)
    {
        ArgumentNullException.ThrowIfNull(file);
        var index = Index(targets, alternateName);
        var plan = new List<(Tensor Weight, LoraModule Lora)>();
        var unmatched = new List<string>();
        foreach (var lora in file.Modules)
        {
            if (index.TryGetValue(lora.Target, out var modules) && modules.TryGetValue(lora.Name, out var weight)) plan.Add((weight, lora));
            else unmatched.Add($"{lora.Target} {lora.Name}");
        }
        if (plan.Count == 0)
            throw new UserInputException(file.Path, $"the LoRA matches no layer of the model (first module: {unmatched.FirstOrDefault()}); it was made for another architecture");
        foreach (var (weight, lora) in plan) CheckFits(weight, lora, file.Path);

        using var noGrad = Autograd.NoGrad();
        if (multiplier != 0)
            foreach (var (weight, lora) in plan)
            {
                using var scope = torch.NewDisposeScope();
                weight.Add_(Delta(weight, lora, multiplier));
            }
        return new LoraMergeResult(plan.Count, unmatched);
    }

    private static Dictionary<LoraTarget, Dictionary<string, Tensor>> Index(IReadOnlyDictionary<LoraTarget, Module> targets, Func<LoraTarget, string, string?>? alternateName) =>
        targets.ToDictionary(t => t.Key, t => IndexModules(t.Key, t.Value, alternateName));

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
        using var scope = torch.NewDisposeScope();
        CheckFits(weight, lora, fileName);
        var delta = Delta(weight, lora, multiplier);
        if (patched.Add(weight))
            saved.Add((weight, weight.Clone().DetachFromDisposeScope()));
        weight.Add_(delta);
    }

    private static void CheckFits(Tensor weight, LoraModule lora, string fileName)
    {
        var produced = lora.ProducedShape();
        var parts = string.Join(", ", lora.Weights.Select(w => $"{w.Key} [{string.Join(", ", w.Value.Shape)}]"));
        if (produced is null || produced[0] != weight.Shape[0] || produced.Aggregate(1L, (a, d) => a * d) != weight.NumEl)
            throw new UserInputException(fileName, $"LoRA: module {lora.Name} has {parts}, which do not fit its weight [{string.Join(", ", weight.Shape)}]; the LoRA was made for another model");
        if (lora.DoraScale is { } dora && DoraShape(weight, dora) is null)
            throw new UserInputException(fileName, $"LoRA: module {lora.Name} has dora_scale [{string.Join(", ", dora.Shape)}], which is neither one value per input channel ({weight.Shape[1]}) nor per output channel ({weight.Shape[0]}) of its weight [{string.Join(", ", weight.Shape)}]");
    }

    // LyCORIS writes the magnitude vector [1, in, 1…] (per input channel); one of out values is per output row.
    private static long[]? DoraShape(Tensor weight, Tensor dora)
    {
        var ones = Enumerable.Repeat(1L, weight.Dim - 1).ToArray();
        var (outputs, inputs) = (weight.Shape[0], weight.Shape[1]);
        if (dora.Shape[0] == 1 && dora.NumEl == inputs) return [1, inputs, .. ones.Skip(1)];
        if (dora.Shape[0] == outputs && dora.NumEl == outputs) return [outputs, .. ones];
        return dora.NumEl == inputs ? [1, inputs, .. ones.Skip(1)] : null;
    }

    // multiplier · scale · Δ (or with DoRA the renormalised difference, times multiplier) in the weight's shape and
    // dtype, computed in float32 (the caller owns a dispose scope).
    private static Tensor Delta(Tensor weight, LoraModule lora, double multiplier)
    {
        var delta = lora.Delta(weight.Shape, weight.Device).Mul(lora.Scale);
        if (lora.DoraScale is { } dora)
        {
            var magnitude = dora.To(weight.Device, DType.Float32).Reshape(DoraShape(weight, dora)!);
            delta = LoraDeltas.Dora(weight.To(DType.Float32), delta, magnitude);
        }
        return delta.Mul(multiplier).To(weight.DType);
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
