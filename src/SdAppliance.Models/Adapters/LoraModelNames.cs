using SdAppliance.Formats.Adapters;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.Loading;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Unet;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Adapters;

/// <summary>One layer kohya's LoRANetwork wraps: its kohya name, the layer, and which rank class it gets.</summary>
/// <param name="LoraName">"lora_unet_…" / "lora_te_…" (<see cref="LoraKeys.KohyaName"/>).</param>
/// <param name="Path">The layer's dotted path inside its root module (diffusers naming).</param>
/// <param name="IsConv3x3">A convolution other than 1×1: it gets conv_dim/conv_alpha (LoCon), the rest network_dim/alpha.</param>
public sealed record KohyaLoraTarget(LoraTarget Target, string LoraName, string Path, Module Layer, bool IsConv3x3);

/// <summary>
/// How LoRA files name a Stable Diffusion model's layers, for applying a LoRA at generation, merging one
/// for good, and training one: the root module of each <see cref="LoraTarget"/>, the UNet layers'
/// original-layout (ldm) paths (which kohya uses for SDXL UNet modules, <c>input_blocks_4_1_…</c>, and
/// A1111-era tools for SD 1.x ones), and the layers kohya sd-scripts' <c>networks/lora.py</c> wraps
/// (FORMATS §4.1). Key prefixes and suffixes are <see cref="LoraKeys"/>'.
/// </summary>
public static class LoraModelNames
{
    /// <summary>The model's root module for each <see cref="LoraTarget"/> it has.</summary>
    public static Dictionary<LoraTarget, Module> Targets(StableDiffusionModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var targets = new Dictionary<LoraTarget, Module> { [LoraTarget.Unet] = model.Unet };
        foreach (var (component, encoder) in model.TextEncoders)
            targets[component == ModelComponents.TextEncoder2 ? LoraTarget.TextEncoder2 : LoraTarget.TextEncoder] = encoder;
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

    /// <summary>
    /// The UNet layers kohya targets, in its order (<c>named_modules</c> order, then child order): every
    /// Linear/Conv2d under a <c>Transformer2DModel</c> (plus, with <paramref name="includeConv3x3"/>, under
    /// <c>ResnetBlock2D</c>/<c>Downsample2D</c>/<c>Upsample2D</c>). SD 1.x/2.x names are diffusers paths;
    /// SDXL's are the original-layout paths kohya's <c>sdxl_original_unet</c> has.
    /// </summary>
    public static List<KohyaLoraTarget> KohyaUnetTargets(UNet2DConditionModel unet, bool isSdxl, bool includeConv3x3)
    {
        ArgumentNullException.ThrowIfNull(unet);
        var ldmNames = isSdxl ? UnetLdmModuleNames(unet) : null;
        var targets = new List<KohyaLoraTarget>();
        foreach (var (path, module) in unet.NamedModules())
        {
            var isTransformer = module is Transformer2DModel;
            var isConvBlock = module is ResnetBlock2D or Downsample2D or Upsample2D;
            if (!isTransformer && !(includeConv3x3 && isConvBlock)) continue;
            foreach (var (childPath, child) in module.NamedModules())
            {
                if (child is not (Linear or Conv2d)) continue;
                var full = path + "." + childPath;
                string name;
                if (ldmNames is null)
                {
                    name = full;
                }
                else if (!ldmNames.TryGetValue(full, out name!))
                {
                    throw new InvalidOperationException($"the SDXL UNet layer '{full}' has no original-layout name; the kohya LoRA name cannot be derived");
                }
                var isConv3x3 = child is Conv2d conv && conv.KernelSize != new Pair(1, 1);
                targets.Add(new KohyaLoraTarget(LoraTarget.Unet, LoraKeys.KohyaName(LoraTarget.Unet, isSdxl, name), full, child, isConv3x3));
            }
        }
        return targets;
    }

    /// <summary>
    /// The layers kohya targets in one text encoder: q/k/v/out_proj of each <c>CLIPAttention</c> and fc1/fc2
    /// of each <c>CLIPMLP</c>, named <c>lora_te_…</c> (SDXL: <c>lora_te1_…</c>, <c>lora_te2_…</c>).
    /// </summary>
    public static List<KohyaLoraTarget> KohyaTextEncoderTargets(ClipTextModel textEncoder, LoraTarget target, bool isSdxl)
    {
        ArgumentNullException.ThrowIfNull(textEncoder);
        var targets = new List<KohyaLoraTarget>();
        foreach (var (path, module) in textEncoder.NamedModules())
        {
            if (module is not (ClipAttention or ClipMlp)) continue;
            foreach (var (childPath, child) in module.NamedModules())
            {
                if (child is not (Linear or Conv2d)) continue;
                var full = path + "." + childPath;
                targets.Add(new KohyaLoraTarget(target, LoraKeys.KohyaName(target, isSdxl, full), full, child, IsConv3x3: false));
            }
        }
        return targets;
    }
}
