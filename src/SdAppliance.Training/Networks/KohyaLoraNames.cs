using SdAppliance.Models.Adapters;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Unet;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Training.Networks;

/// <summary>One layer kohya's LoRANetwork wraps: its kohya name, the layer, and which rank class it gets.</summary>
/// <param name="LoraName">"lora_unet_…" / "lora_te_…": prefix and module path with dots turned into underscores.</param>
/// <param name="Path">The layer's dotted path inside its root module (diffusers naming).</param>
/// <param name="IsConv3x3">A convolution other than 1×1: it gets conv_dim/conv_alpha (LoCon), the rest network_dim/alpha.</param>
public sealed record KohyaLoraTarget(LoraTarget Target, string LoraName, string Path, Module Layer, bool IsConv3x3);

/// <summary>
/// Which layers kohya sd-scripts' <c>networks/lora.py</c> wraps and what it calls them (FORMATS §4.1):
/// every Linear/Conv2d under a <c>Transformer2DModel</c> of the UNet (plus, with a conv dim, under
/// <c>ResnetBlock2D</c>/<c>Downsample2D</c>/<c>Upsample2D</c>), and under <c>CLIPAttention</c>/<c>CLIPMLP</c>
/// of each text encoder. SD 1.x/2.x UNet names are diffusers paths; SDXL's are the original (ldm)
/// paths kohya's <c>sdxl_original_unet</c> has (<c>input_blocks_4_1_…</c>), from
/// <see cref="LoraModelNames.UnetLdmModuleNames"/>, which the generation path uses too.
/// </summary>
public static class KohyaLoraNames
{
    public const string UnetPrefix = "lora_unet";
    public const string TextEncoderPrefix = "lora_te";
    public const string SdxlTextEncoder1Prefix = "lora_te1";
    public const string SdxlTextEncoder2Prefix = "lora_te2";

    /// <summary>The UNet layers kohya targets, in its order (<c>named_modules</c> order, then child order).</summary>
    public static List<KohyaLoraTarget> UnetTargets(UNet2DConditionModel unet, bool isSdxl, bool includeConv3x3)
    {
        ArgumentNullException.ThrowIfNull(unet);
        var ldmNames = isSdxl ? LoraModelNames.UnetLdmModuleNames(unet) : null;
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
                targets.Add(new KohyaLoraTarget(LoraTarget.Unet, UnetPrefix + "_" + name.Replace('.', '_'), full, child, isConv3x3));
            }
        }
        return targets;
    }

    /// <summary>The text-encoder layers kohya targets: q/k/v/out_proj of each self-attention and fc1/fc2 of each MLP.</summary>
    public static List<KohyaLoraTarget> TextEncoderTargets(ClipTextModel textEncoder, string prefix, LoraTarget target)
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
                targets.Add(new KohyaLoraTarget(target, prefix + "_" + full.Replace('.', '_'), full, child, IsConv3x3: false));
            }
        }
        return targets;
    }
}
