using SdAppliance.Formats.Checkpoints;
using SdAppliance.Models.Loading;
using SdAppliance.Models.Unet;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Adapters;

/// <summary>
/// How LoRA files name a Stable Diffusion model's layers, for the generation path (applying a LoRA)
/// and for training (kohya's names, merging a LoRA for good): the root module of each
/// <see cref="LoraTarget"/>, and the UNet layers' original-layout (ldm) paths, which kohya uses for
/// SDXL UNet modules (<c>input_blocks_4_1_…</c>) and A1111-era tools for SD 1.x ones.
/// </summary>
public static class LoraModelNames
{
    /// <summary>The model's root module for each <see cref="LoraTarget"/> it has.</summary>
    public static Dictionary<LoraTarget, Module> Targets(StableDiffusionModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var targets = new Dictionary<LoraTarget, Module> { [LoraTarget.Unet] = model.Unet, [LoraTarget.TextEncoder] = model.TextEncoder };
        if (model.TextEncoder2 is not null) targets[LoraTarget.TextEncoder2] = model.TextEncoder2;
        return targets;
    }

    /// <summary>
    /// Diffusers module path → original-layout module path for every Linear/Conv2d of the UNet
    /// ("down_blocks.1.attentions.0.proj_in" → "input_blocks.4.1.proj_in"), from the key map the
    /// single-file converter uses, so the two can never disagree.
    /// </summary>
    public static Dictionary<string, string> UnetLdmModuleNames(UNet2DConditionModel unet)
    {
        ArgumentNullException.ThrowIfNull(unet);
        var shapes = new Dictionary<TensorKey, long[]>();
        using (var state = unet.StateDict())
            foreach (var (name, tensor) in state)
                shapes[new TensorKey(ModelComponents.Unet, name)] = tensor.Shape;
        var mapping = LdmKeyMap.FromDiffusers(shapes);
        var names = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var recipe in mapping.Tensors)
        {
            var source = recipe.Sources[0].Name;
            var target = recipe.Target.Name;
            if (!source.EndsWith(".weight", StringComparison.Ordinal) || !target.StartsWith(LdmKeyMap.UnetPrefix, StringComparison.Ordinal)) continue;
            names[source[..^".weight".Length]] = target[LdmKeyMap.UnetPrefix.Length..^".weight".Length];
        }
        return names;
    }

    /// <summary>
    /// The second name <see cref="LoraPatch.Apply"/> should know each UNet layer by: its original-layout
    /// path, underscored ("input_blocks_4_1_proj_in"). Text-encoder names need none. The names are worked
    /// out once, here, so keep the function rather than asking again for every patch.
    /// </summary>
    public static Func<LoraTarget, string, string?> AlternateNames(UNet2DConditionModel unet)
    {
        var ldm = UnetLdmModuleNames(unet);
        return (target, path) => target == LoraTarget.Unet && ldm.TryGetValue(path, out var name) ? name.Replace('.', '_') : null;
    }
}
