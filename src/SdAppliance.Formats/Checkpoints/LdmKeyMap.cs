using System.Globalization;

namespace SdAppliance.Formats.Checkpoints;

/// <summary>
/// Maps tensor names and shapes between the original single-file Stable Diffusion layout ("ldm":
/// CompVis / Stability / A1111 .ckpt and .safetensors) and the diffusers component layout (unet,
/// vae, text_encoder, text_encoder_2), for SD 1.x, SD 2.x, SDXL base and the SDXL refiner. Pure names and shapes:
/// the result says which bytes to take and how to rearrange them (<see cref="TensorRecipe"/>).
/// </summary>
/// <remarks>
/// <para>The rules are those of diffusers' conversion scripts (convert_diffusers_to_original_*
/// and the single-file loader), derived from the structure rather than hard-coded tables, so they
/// hold for any UNet depth or VAE level count that keeps the SD block pattern:</para>
/// <list type="bullet">
/// <item>UNet <c>model.diffusion_model.</c>: <c>input_blocks.K</c> counts conv_in, then per level
/// <c>layers_per_block</c> resnet(+attention) blocks and a downsampler; <c>output_blocks.K</c> has
/// <c>layers_per_block + 1</c> per level, the upsampler sitting after the attention when the level
/// has one; resnet parts in_layers/out_layers/emb_layers/skip_connection are
/// norm1,conv1/norm2,conv2/time_emb_proj/conv_shortcut; SDXL's <c>label_emb.0.{0,2}</c> is
/// add_embedding.linear_{1,2}.</item>
/// <item>VAE <c>first_stage_model.</c>: decoder up levels are numbered in reverse; the mid-block
/// attention's q/k/v/proj_out are 1x1 convolutions in ldm and linear layers in diffusers (a reshape).</item>
/// <item>Text: SD 1.x and SDXL's first encoder keep the Hugging Face CLIP names; OpenCLIP (SD 2.x,
/// SDXL's bigG) splits <c>attn.in_proj_weight/bias</c> into q/k/v, renames resblocks/ln_1/ln_2/c_fc/
/// c_proj, and SDXL's <c>text_projection</c> is the transpose of diffusers' text_projection.weight.</item>
/// </list>
/// <para>Ignored, not reported as unknown: EMA copies (<c>model_ema.*</c>), the DDPM schedule
/// buffers (<c>betas</c>, <c>alphas_cumprod</c>...), <c>denoiser.sigmas</c>, OpenCLIP's
/// <c>logit_scale</c>, CLIP's <c>position_ids</c>, and for SD 2.x the 24th OpenCLIP block and the
/// text projection (SD 2.x conditions on the penultimate layer; diffusers keeps 23 layers).</para>
/// </remarks>
public static class LdmKeyMap
{
    /// <summary>The UNet prefix of the single-file layout.</summary>
    public const string UnetPrefix = "model.diffusion_model.";

    /// <summary>The VAE prefix of the single-file layout.</summary>
    public const string VaePrefix = "first_stage_model.";

    private const string V1TextPrefix = "cond_stage_model.transformer.";
    private const string V2TextPrefix = "cond_stage_model.model.";
    private const string XlTextPrefix = "conditioner.embedders.0.transformer.";
    private const string XlText2Prefix = "conditioner.embedders.1.model.";

    // The refiner's one embedder is bigG, so it is embedder 0.
    private const string XlRefinerTextPrefix = "conditioner.embedders.0.model.";

    // SD 2.x uses OpenCLIP ViT-H's penultimate layer, so diffusers' text encoder has 23 of its 24 blocks.
    private const int V2TextLayers = 23;

    private static readonly HashSet<string> TrainingBuffers = new(StringComparer.Ordinal)
    {
        "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
        "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2", "lvlb_weights", "denoiser.sigmas",
    };

    private static readonly (string Ldm, string Diffusers)[] ResnetParts =
    [
        ("in_layers.0.", "norm1."),
        ("in_layers.2.", "conv1."),
        ("out_layers.0.", "norm2."),
        ("out_layers.3.", "conv2."),
        ("emb_layers.1.", "time_emb_proj."),
        ("skip_connection.", "conv_shortcut."),
    ];

    private static readonly (string Ldm, string Diffusers)[] VaeAttentionParts =
    [
        ("norm.", "group_norm."),
        ("q.", "to_q."),
        ("k.", "to_k."),
        ("v.", "to_v."),
        ("proj_out.", "to_out.0."),
    ];

    // Names older diffusers releases gave the VAE attention.
    private static readonly (string Legacy, string Current)[] LegacyVaeAttentionParts =
    [
        ("query.", "to_q."),
        ("key.", "to_k."),
        ("value.", "to_v."),
        ("proj_attn.", "to_out.0."),
    ];

    private static readonly (string OpenClip, string Diffusers)[] OpenClipLayerParts =
    [
        ("ln_1.", "layer_norm1."),
        ("ln_2.", "layer_norm2."),
        ("mlp.c_fc.", "mlp.fc1."),
        ("mlp.c_proj.", "mlp.fc2."),
        ("attn.out_proj.", "self_attn.out_proj."),
    ];

    /// <summary>
    /// The family of a single-file checkpoint from its keys (text-encoder prefixes), or for a
    /// UNet-only file from the cross-attention width (768 SD 1.x, 1024 SD 2.x, 2048 SDXL, 1280 the SDXL refiner).
    /// </summary>
    public static ModelFamily DetectFamily(IReadOnlyDictionary<string, long[]> ldm)
    {
        ArgumentNullException.ThrowIfNull(ldm);
        var keys = ldm.Keys;
        if (keys.Any(k => k.StartsWith(XlText2Prefix, StringComparison.Ordinal)) && keys.Any(k => k.StartsWith(XlTextPrefix, StringComparison.Ordinal)))
            return ModelFamily.XlBase;
        if (keys.Any(k => k.StartsWith(XlRefinerTextPrefix, StringComparison.Ordinal)) && !keys.Any(k => k.StartsWith("conditioner.embedders.1.", StringComparison.Ordinal)))
            return ModelFamily.XlRefiner;
        if (keys.Any(k => k.StartsWith("conditioner.", StringComparison.Ordinal)))
            return ModelFamily.Unknown;
        if (keys.Any(k => k.StartsWith(V2TextPrefix, StringComparison.Ordinal)))
            return ModelFamily.V2;
        if (keys.Any(k => k.StartsWith(V1TextPrefix, StringComparison.Ordinal)))
            return ModelFamily.V1;
        var contextWidth = ldm
            .Where(p => p.Key.StartsWith(UnetPrefix, StringComparison.Ordinal) && p.Key.EndsWith(".attn2.to_k.weight", StringComparison.Ordinal) && p.Value.Length == 2)
            .Select(p => p.Value[1])
            .FirstOrDefault();
        return contextWidth switch
        {
            768 => ModelFamily.V1,
            1024 => ModelFamily.V2,
            2048 when ldm.ContainsKey(UnetPrefix + "label_emb.0.0.weight") => ModelFamily.XlBase,
            1280 when ldm.ContainsKey(UnetPrefix + "label_emb.0.0.weight") => ModelFamily.XlRefiner,
            _ => ModelFamily.Unknown,
        };
    }

    /// <summary>
    /// The family of a diffusers model from its components' keys (SDXL has text_encoder_2, its refiner that one alone;
    /// SD 2.x's text encoder has 23 layers).
    /// </summary>
    public static ModelFamily DetectFamily(IReadOnlyDictionary<TensorKey, long[]> diffusers)
    {
        ArgumentNullException.ThrowIfNull(diffusers);
        if (diffusers.Keys.Any(k => k.Component == ModelComponents.TextEncoder2))
            return diffusers.Keys.Any(k => k.Component == ModelComponents.TextEncoder) ? ModelFamily.XlBase : ModelFamily.XlRefiner;
        // The test diffusers' own conversion script uses.
        if (diffusers.Keys.Any(k => k.Component == ModelComponents.TextEncoder && TextModelName(k.Name).StartsWith("text_model.encoder.layers.22.", StringComparison.Ordinal)))
            return ModelFamily.V2;
        return diffusers.Keys.Any(k => k.Component is ModelComponents.TextEncoder or ModelComponents.Unet) ? ModelFamily.V1 : ModelFamily.Unknown;
    }

    /// <summary>Maps a single-file checkpoint's tensors (name -&gt; shape) to diffusers components.</summary>
    /// <param name="ldm">Every tensor of the file.</param>
    /// <param name="family">The family; <see cref="ModelFamily.Unknown"/> detects it with <see cref="DetectFamily(IReadOnlyDictionary{string, long[]})"/>.</param>
    public static KeyMapping ToDiffusers(IReadOnlyDictionary<string, long[]> ldm, ModelFamily family = ModelFamily.Unknown)
    {
        ArgumentNullException.ThrowIfNull(ldm);
        if (family == ModelFamily.Unknown)
            family = DetectFamily(ldm);
        var layers = LdmLayersPerBlock(ldm.Keys);
        var vaeLevels = ldm.Keys.Select(k => IndexAfter(k, VaePrefix + "decoder.up.")).Where(i => i >= 0).Distinct().Count();
        var map = new Builder(family);
        foreach (var (key, shape) in ldm)
        {
            var source = new TensorKey(ModelComponents.SingleFile, key);
            if (IsIgnoredLdm(key, family))
            {
                map.Ignore(source);
            }
            else if (key.StartsWith(UnetPrefix, StringComparison.Ordinal))
            {
                map.Copy(source, shape, ModelComponents.Unet, UnetToDiffusers(key[UnetPrefix.Length..], layers));
            }
            else if (key.StartsWith(VaePrefix, StringComparison.Ordinal))
            {
                var name = VaeToDiffusers(key[VaePrefix.Length..], vaeLevels);
                if (name is not null && IsVaeAttentionWeight(name) && shape is [var o, var i, 1, 1])
                    map.Add(new TensorRecipe(new TensorKey(ModelComponents.Vae, name), [o, i], TensorOp.Reshape, [source], shape));
                else
                    map.Copy(source, shape, ModelComponents.Vae, name);
            }
            else if (family == ModelFamily.V1 && key.StartsWith(V1TextPrefix, StringComparison.Ordinal))
            {
                map.Copy(source, shape, ModelComponents.TextEncoder, TextModelName(key[V1TextPrefix.Length..]));
            }
            else if (family == ModelFamily.XlBase && key.StartsWith(XlTextPrefix, StringComparison.Ordinal))
            {
                map.Copy(source, shape, ModelComponents.TextEncoder, TextModelName(key[XlTextPrefix.Length..]));
            }
            else if (family == ModelFamily.V2 && key.StartsWith(V2TextPrefix, StringComparison.Ordinal))
            {
                OpenClipToDiffusers(map, source, shape, key[V2TextPrefix.Length..], ModelComponents.TextEncoder);
            }
            else if (family == ModelFamily.XlBase && key.StartsWith(XlText2Prefix, StringComparison.Ordinal))
            {
                OpenClipToDiffusers(map, source, shape, key[XlText2Prefix.Length..], ModelComponents.TextEncoder2);
            }
            else if (family == ModelFamily.XlRefiner && key.StartsWith(XlRefinerTextPrefix, StringComparison.Ordinal))
            {
                OpenClipToDiffusers(map, source, shape, key[XlRefinerTextPrefix.Length..], ModelComponents.TextEncoder2);
            }
            else
            {
                map.Unmapped(source);
            }
        }
        return map.Build();
    }

    /// <summary>Maps diffusers components' tensors (component and name -&gt; shape) to the single-file layout.</summary>
    /// <param name="diffusers">Every tensor of the unet, vae, text_encoder (and text_encoder_2) files.</param>
    /// <param name="family">The family; <see cref="ModelFamily.Unknown"/> detects it with <see cref="DetectFamily(IReadOnlyDictionary{TensorKey, long[]})"/>.</param>
    public static KeyMapping FromDiffusers(IReadOnlyDictionary<TensorKey, long[]> diffusers, ModelFamily family = ModelFamily.Unknown)
    {
        ArgumentNullException.ThrowIfNull(diffusers);
        if (family == ModelFamily.Unknown)
            family = DetectFamily(diffusers);
        var unetNames = diffusers.Keys.Where(k => k.Component == ModelComponents.Unet).Select(k => k.Name).ToList();
        var layers = unetNames.Select(n => IndexAfter(n, "down_blocks.0.resnets.")).Where(i => i >= 0).Distinct().Count();
        var upWithAttention = unetNames.Select(n => IndexAfter(n, "up_blocks.")).Where(i => i >= 0)
            .Where(i => unetNames.Any(n => n.StartsWith($"up_blocks.{i}.attentions.", StringComparison.Ordinal))).ToHashSet();
        var vaeLevels = diffusers.Keys.Where(k => k.Component == ModelComponents.Vae)
            .Select(k => IndexAfter(k.Name, "decoder.up_blocks.")).Where(i => i >= 0).Distinct().Count();
        var map = new Builder(family);
        foreach (var (source, shape) in diffusers)
        {
            var name = source.Name;
            switch (source.Component)
            {
                case ModelComponents.Unet:
                    map.Copy(source, shape, ModelComponents.SingleFile, Prefixed(UnetPrefix, UnetToLdm(name, layers, upWithAttention)));
                    break;
                case ModelComponents.Vae:
                    var ldm = Prefixed(VaePrefix, VaeToLdm(name, vaeLevels));
                    if (ldm is not null && IsLdmVaeAttentionWeight(ldm) && shape is [var o, var i])
                        map.Add(new TensorRecipe(new TensorKey(ModelComponents.SingleFile, ldm), [o, i, 1, 1], TensorOp.Reshape, [source], shape));
                    else
                        map.Copy(source, shape, ModelComponents.SingleFile, ldm);
                    break;
                case ModelComponents.TextEncoder when family is ModelFamily.V1 or ModelFamily.XlBase:
                    if (name.EndsWith("position_ids", StringComparison.Ordinal))
                        map.Ignore(source);
                    else
                        map.Copy(source, shape, ModelComponents.SingleFile, (family == ModelFamily.V1 ? V1TextPrefix : XlTextPrefix) + TextModelName(name));
                    break;
                case ModelComponents.TextEncoder when family == ModelFamily.V2:
                    OpenClipToLdm(map, diffusers, source, shape, V2TextPrefix, projection: false);
                    break;
                case ModelComponents.TextEncoder2 when family is ModelFamily.XlBase or ModelFamily.XlRefiner:
                    OpenClipToLdm(map, diffusers, source, shape, family == ModelFamily.XlBase ? XlText2Prefix : XlRefinerTextPrefix, projection: true);
                    break;
                default:
                    map.Unmapped(source);
                    break;
            }
        }
        return map.Build();
    }

    private static bool IsIgnoredLdm(string key, ModelFamily family)
    {
        if (TrainingBuffers.Contains(key) || key.StartsWith("model_ema.", StringComparison.Ordinal))
            return true;
        if (key.EndsWith(".position_ids", StringComparison.Ordinal) && (key.StartsWith(V1TextPrefix, StringComparison.Ordinal) || key.StartsWith(XlTextPrefix, StringComparison.Ordinal)))
            return true;
        if (key == V2TextPrefix + "logit_scale" || key == XlText2Prefix + "logit_scale" || key == XlRefinerTextPrefix + "logit_scale")
            return true;
        if (family == ModelFamily.V2 && key.StartsWith(V2TextPrefix, StringComparison.Ordinal))
        {
            var rest = key[V2TextPrefix.Length..];
            return rest == "text_projection" || IndexAfter(rest, "transformer.resblocks.") >= V2TextLayers;
        }
        return false;
    }

    // The number after `prefix` at the start of `text` (e.g. 12 for "a.12.b" and "a."), or -1.
    private static int IndexAfter(string text, string prefix)
    {
        if (!text.StartsWith(prefix, StringComparison.Ordinal))
            return -1;
        var end = text.IndexOf('.', prefix.Length);
        var digits = end < 0 ? text.AsSpan(prefix.Length) : text.AsSpan(prefix.Length, end - prefix.Length);
        return int.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? n : -1;
    }

    private static string? Prefixed(string prefix, string? name) => name is null ? null : prefix + name;

    private static string I(int n) => n.ToString(CultureInfo.InvariantCulture);

    // Transformers >= 5.6 saves CLIPTextModel without its "text_model." level (the projection stays outside it).
    private static string TextModelName(string name) =>
        name.StartsWith("text_model.", StringComparison.Ordinal) || name.StartsWith("text_projection", StringComparison.Ordinal) ? name : "text_model." + name;

    // layers_per_block: the first downsampler sits at input_blocks.(layers + 1); with a single level there is none.
    private static int LdmLayersPerBlock(IEnumerable<string> keys)
    {
        var blocks = keys.Select(k => (Key: k, Index: IndexAfter(k, UnetPrefix + "input_blocks."))).Where(b => b.Index >= 0).ToList();
        var downsamplers = blocks.Where(b => b.Key.StartsWith($"{UnetPrefix}input_blocks.{I(b.Index)}.0.op.", StringComparison.Ordinal)).Select(b => b.Index).ToList();
        return downsamplers.Count > 0 ? downsamplers.Min() - 1 : blocks.Select(b => b.Index).DefaultIfEmpty(0).Max();
    }

    private static bool TryParts(string name, int count, out string[] parts)
    {
        parts = name.Split('.', count + 1);
        return parts.Length == count + 1;
    }

    private static int Number(string text) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? n : -1;

    private static string? ResnetToDiffusers(string rest)
    {
        foreach (var (ldm, diffusers) in ResnetParts)
        {
            if (rest.StartsWith(ldm, StringComparison.Ordinal))
                return diffusers + rest[ldm.Length..];
        }
        return null;
    }

    private static string? ResnetToLdm(string rest)
    {
        foreach (var (ldm, diffusers) in ResnetParts)
        {
            if (rest.StartsWith(diffusers, StringComparison.Ordinal))
                return ldm + rest[diffusers.Length..];
        }
        return null;
    }

    private static string? UnetToDiffusers(string name, int layers)
    {
        if (name.StartsWith("time_embed.0.", StringComparison.Ordinal))
            return "time_embedding.linear_1." + name["time_embed.0.".Length..];
        if (name.StartsWith("time_embed.2.", StringComparison.Ordinal))
            return "time_embedding.linear_2." + name["time_embed.2.".Length..];
        if (name.StartsWith("label_emb.0.0.", StringComparison.Ordinal))
            return "add_embedding.linear_1." + name["label_emb.0.0.".Length..];
        if (name.StartsWith("label_emb.0.2.", StringComparison.Ordinal))
            return "add_embedding.linear_2." + name["label_emb.0.2.".Length..];
        if (name.StartsWith("out.0.", StringComparison.Ordinal))
            return "conv_norm_out." + name["out.0.".Length..];
        if (name.StartsWith("out.2.", StringComparison.Ordinal))
            return "conv_out." + name["out.2.".Length..];
        if (name.StartsWith("input_blocks.", StringComparison.Ordinal) && TryParts(name, 3, out var p))
        {
            int k = Number(p[1]), s = Number(p[2]);
            var rest = p[3];
            if (k == 0)
                return s == 0 ? "conv_in." + rest : null;
            if (k < 0 || layers <= 0)
                return null;
            int level = (k - 1) / (layers + 1), j = (k - 1) % (layers + 1);
            if (j < layers)
            {
                return s switch
                {
                    0 => Prefixed($"down_blocks.{I(level)}.resnets.{I(j)}.", ResnetToDiffusers(rest)),
                    1 => $"down_blocks.{I(level)}.attentions.{I(j)}.{rest}",
                    _ => null,
                };
            }
            return s == 0 && rest.StartsWith("op.", StringComparison.Ordinal) ? $"down_blocks.{I(level)}.downsamplers.0.conv.{rest[3..]}" : null;
        }
        if (name.StartsWith("middle_block.", StringComparison.Ordinal) && TryParts(name, 2, out p))
        {
            return Number(p[1]) switch
            {
                0 => Prefixed("mid_block.resnets.0.", ResnetToDiffusers(p[2])),
                1 => "mid_block.attentions.0." + p[2],
                2 => Prefixed("mid_block.resnets.1.", ResnetToDiffusers(p[2])),
                _ => null,
            };
        }
        if (name.StartsWith("output_blocks.", StringComparison.Ordinal) && TryParts(name, 3, out p))
        {
            int k = Number(p[1]), s = Number(p[2]);
            var rest = p[3];
            if (k < 0 || s < 0 || layers <= 0)
                return null;
            int level = k / (layers + 1), j = k % (layers + 1);
            if (s == 0)
                return Prefixed($"up_blocks.{I(level)}.resnets.{I(j)}.", ResnetToDiffusers(rest));
            // An attention block has no direct "conv" child, so this is the upsampler at index 1 or 2.
            if (rest.StartsWith("conv.", StringComparison.Ordinal))
                return j == layers ? $"up_blocks.{I(level)}.upsamplers.0.conv.{rest[5..]}" : null;
            return s == 1 ? $"up_blocks.{I(level)}.attentions.{I(j)}.{rest}" : null;
        }
        return null;
    }

    private static string? UnetToLdm(string name, int layers, HashSet<int> upWithAttention)
    {
        (string Diffusers, string Ldm)[] fixedParts =
        [
            ("conv_in.", "input_blocks.0.0."),
            ("time_embedding.linear_1.", "time_embed.0."),
            ("time_embedding.linear_2.", "time_embed.2."),
            ("add_embedding.linear_1.", "label_emb.0.0."),
            ("add_embedding.linear_2.", "label_emb.0.2."),
            ("conv_norm_out.", "out.0."),
            ("conv_out.", "out.2."),
        ];
        foreach (var (diffusers, ldm) in fixedParts)
        {
            if (name.StartsWith(diffusers, StringComparison.Ordinal))
                return ldm + name[diffusers.Length..];
        }
        if (name.StartsWith("mid_block.", StringComparison.Ordinal) && TryParts(name, 3, out var m))
        {
            var index = Number(m[2]);
            return m[1] switch
            {
                "resnets" when index >= 0 => Prefixed($"middle_block.{I(2 * index)}.", ResnetToLdm(m[3])),
                "attentions" when index == 0 => "middle_block.1." + m[3],
                _ => null,
            };
        }
        if (!TryParts(name, 4, out var p))
            return null;
        int i = Number(p[1]), j = Number(p[3]);
        var rest = p[4];
        if (i < 0 || j < 0)
            return null;
        var stride = layers + 1;
        return (p[0], p[2]) switch
        {
            ("down_blocks", "resnets") => Prefixed($"input_blocks.{I(stride * i + j + 1)}.0.", ResnetToLdm(rest)),
            ("down_blocks", "attentions") => $"input_blocks.{I(stride * i + j + 1)}.1.{rest}",
            ("down_blocks", "downsamplers") when j == 0 && rest.StartsWith("conv.", StringComparison.Ordinal) =>
                $"input_blocks.{I(stride * (i + 1))}.0.op.{rest[5..]}",
            ("up_blocks", "resnets") => Prefixed($"output_blocks.{I(stride * i + j)}.0.", ResnetToLdm(rest)),
            ("up_blocks", "attentions") => $"output_blocks.{I(stride * i + j)}.1.{rest}",
            ("up_blocks", "upsamplers") when j == 0 && rest.StartsWith("conv.", StringComparison.Ordinal) =>
                $"output_blocks.{I(stride * i + layers)}.{(upWithAttention.Contains(i) ? "2" : "1")}.{rest}",
            _ => null,
        };
    }

    private static bool IsVaeAttentionWeight(string diffusersName) =>
        diffusersName.Contains("mid_block.attentions.0.", StringComparison.Ordinal) && !diffusersName.Contains(".group_norm.", StringComparison.Ordinal)
        && diffusersName.EndsWith(".weight", StringComparison.Ordinal);

    private static bool IsLdmVaeAttentionWeight(string ldmName) =>
        ldmName.Contains(".mid.attn_1.", StringComparison.Ordinal) && !ldmName.Contains(".attn_1.norm.", StringComparison.Ordinal)
        && ldmName.EndsWith(".weight", StringComparison.Ordinal);

    private static string VaeResnetToDiffusers(string rest) =>
        rest.StartsWith("nin_shortcut.", StringComparison.Ordinal) ? "conv_shortcut." + rest["nin_shortcut.".Length..] : rest;

    private static string VaeResnetToLdm(string rest) =>
        rest.StartsWith("conv_shortcut.", StringComparison.Ordinal) ? "nin_shortcut." + rest["conv_shortcut.".Length..] : rest;

    /// <summary>
    /// What both directions of the VAE mapping share: the quant convolutions and each coder's conv_in/conv_out
    /// keep their names; any other encoder/decoder name goes to <paramref name="mapCoderPart"/> as (coder, rest).
    /// </summary>
    private static string? MapVaeName(string name, Func<string, string, string?> mapCoderPart)
    {
        if (name.StartsWith("quant_conv.", StringComparison.Ordinal) || name.StartsWith("post_quant_conv.", StringComparison.Ordinal))
            return name;
        var dot = name.IndexOf('.');
        if (dot < 0)
            return null;
        var coder = name[..dot];
        if (coder != "encoder" && coder != "decoder")
            return null;
        var rest = name[(dot + 1)..];
        if (rest.StartsWith("conv_in.", StringComparison.Ordinal) || rest.StartsWith("conv_out.", StringComparison.Ordinal))
            return name;
        return mapCoderPart(coder, rest);
    }

    private static string? VaeToDiffusers(string name, int levels) => MapVaeName(name, (coder, rest) => VaeCoderPartToDiffusers(coder, rest, levels));

    private static string? VaeToLdm(string name, int levels) => MapVaeName(name, (coder, rest) => VaeCoderPartToLdm(coder, rest, levels));

    private static string? VaeCoderPartToDiffusers(string coder, string rest, int levels)
    {
        if (rest.StartsWith("norm_out.", StringComparison.Ordinal))
            return $"{coder}.conv_norm_out.{rest["norm_out.".Length..]}";
        if (rest.StartsWith("mid.block_", StringComparison.Ordinal) && TryParts(rest, 2, out var m) && m[1] is "block_1" or "block_2")
            return $"{coder}.mid_block.resnets.{(m[1] == "block_1" ? "0" : "1")}.{VaeResnetToDiffusers(m[2])}";
        if (rest.StartsWith("mid.attn_1.", StringComparison.Ordinal))
        {
            var part = rest["mid.attn_1.".Length..];
            foreach (var (ldm, diffusers) in VaeAttentionParts)
            {
                if (part.StartsWith(ldm, StringComparison.Ordinal))
                    return $"{coder}.mid_block.attentions.0.{diffusers}{part[ldm.Length..]}";
            }
            return null;
        }
        if (!TryParts(rest, 3, out var p))
            return null;
        var i = Number(p[1]);
        if (i < 0)
            return null;
        var level = (coder, p[0]) switch
        {
            ("encoder", "down") => i,
            ("decoder", "up") when i < levels => levels - 1 - i,
            _ => -1,
        };
        if (level < 0)
            return null;
        var (blocks, sampler, samplers) = coder == "encoder" ? ("down_blocks", "downsample", "downsamplers") : ("up_blocks", "upsample", "upsamplers");
        if (p[2] == "block" && TryParts(p[3], 1, out var b) && Number(b[0]) >= 0)
            return $"{coder}.{blocks}.{I(level)}.resnets.{b[0]}.{VaeResnetToDiffusers(b[1])}";
        if (p[2] == sampler && p[3].StartsWith("conv.", StringComparison.Ordinal))
            return $"{coder}.{blocks}.{I(level)}.{samplers}.0.{p[3]}";
        return null;
    }

    private static string? VaeCoderPartToLdm(string coder, string rest, int levels)
    {
        if (rest.StartsWith("conv_norm_out.", StringComparison.Ordinal))
            return $"{coder}.norm_out.{rest["conv_norm_out.".Length..]}";
        if (rest.StartsWith("mid_block.attentions.0.", StringComparison.Ordinal))
        {
            var part = rest["mid_block.attentions.0.".Length..];
            foreach (var (legacy, current) in LegacyVaeAttentionParts)
            {
                if (part.StartsWith(legacy, StringComparison.Ordinal))
                    part = current + part[legacy.Length..];
            }
            foreach (var (ldm, diffusers) in VaeAttentionParts)
            {
                if (part.StartsWith(diffusers, StringComparison.Ordinal))
                    return $"{coder}.mid.attn_1.{ldm}{part[diffusers.Length..]}";
            }
            return null;
        }
        if (rest.StartsWith("mid_block.resnets.", StringComparison.Ordinal) && TryParts(rest, 3, out var m) && Number(m[2]) is 0 or 1)
            return $"{coder}.mid.block_{I(Number(m[2]) + 1)}.{VaeResnetToLdm(m[3])}";
        if (!TryParts(rest, 4, out var p))
            return null;
        int i = Number(p[1]), j = Number(p[3]);
        if (i < 0 || j < 0)
            return null;
        return (coder, p[0], p[2]) switch
        {
            ("encoder", "down_blocks", "resnets") => $"encoder.down.{I(i)}.block.{I(j)}.{VaeResnetToLdm(p[4])}",
            ("encoder", "down_blocks", "downsamplers") when j == 0 && p[4].StartsWith("conv.", StringComparison.Ordinal) => $"encoder.down.{I(i)}.downsample.{p[4]}",
            ("decoder", "up_blocks", "resnets") when i < levels => $"decoder.up.{I(levels - 1 - i)}.block.{I(j)}.{VaeResnetToLdm(p[4])}",
            ("decoder", "up_blocks", "upsamplers") when i < levels && j == 0 && p[4].StartsWith("conv.", StringComparison.Ordinal) => $"decoder.up.{I(levels - 1 - i)}.upsample.{p[4]}",
            _ => null,
        };
    }

    private static void OpenClipToDiffusers(Builder map, TensorKey source, long[] shape, string name, string component)
    {
        TensorKey Target(string n) => new(component, n);
        switch (name)
        {
            case "token_embedding.weight":
                map.Copy(source, shape, component, "text_model.embeddings.token_embedding.weight");
                return;
            case "positional_embedding":
                map.Copy(source, shape, component, "text_model.embeddings.position_embedding.weight");
                return;
            case "text_projection" when shape is [var rows, var columns]:
                map.Add(new TensorRecipe(Target("text_projection.weight"), [columns, rows], TensorOp.Transpose, [source], shape));
                return;
        }
        if (name.StartsWith("ln_final.", StringComparison.Ordinal))
        {
            map.Copy(source, shape, component, "text_model.final_layer_norm." + name["ln_final.".Length..]);
            return;
        }
        var layer = IndexAfter(name, "transformer.resblocks.");
        if (layer < 0)
        {
            map.Unmapped(source);
            return;
        }
        var rest = name[($"transformer.resblocks.{I(layer)}.").Length..];
        var prefix = $"text_model.encoder.layers.{I(layer)}.";
        if (rest is "attn.in_proj_weight" or "attn.in_proj_bias")
        {
            if (shape.Length == 0 || shape[0] % 3 != 0)
            {
                map.Unmapped(source);
                return;
            }
            var suffix = rest.EndsWith("weight", StringComparison.Ordinal) ? "weight" : "bias";
            long[] part = [shape[0] / 3, .. shape[1..]];
            string[] projections = ["q_proj", "k_proj", "v_proj"];
            for (var k = 0; k < 3; k++)
                map.Add(new TensorRecipe(Target($"{prefix}self_attn.{projections[k]}.{suffix}"), part, TensorOp.Slice, [source], shape, k, 3));
            return;
        }
        foreach (var (openClip, diffusers) in OpenClipLayerParts)
        {
            if (rest.StartsWith(openClip, StringComparison.Ordinal))
            {
                map.Copy(source, shape, component, prefix + diffusers + rest[openClip.Length..]);
                return;
            }
        }
        map.Unmapped(source);
    }

    private static void OpenClipToLdm(Builder map, IReadOnlyDictionary<TensorKey, long[]> all, TensorKey source, long[] shape, string ldmPrefix, bool projection)
    {
        var name = TextModelName(source.Name);
        TensorKey Target(string n) => new(ModelComponents.SingleFile, ldmPrefix + n);
        switch (name)
        {
            case "text_model.embeddings.token_embedding.weight":
                map.Copy(source, shape, ModelComponents.SingleFile, ldmPrefix + "token_embedding.weight");
                return;
            case "text_model.embeddings.position_embedding.weight":
                map.Copy(source, shape, ModelComponents.SingleFile, ldmPrefix + "positional_embedding");
                return;
            case "text_model.embeddings.position_ids":
                map.Ignore(source);
                return;
            case "text_projection.weight" when projection && shape is [var rows, var columns]:
                map.Add(new TensorRecipe(Target("text_projection"), [columns, rows], TensorOp.Transpose, [source], shape));
                return;
        }
        if (name.StartsWith("text_model.final_layer_norm.", StringComparison.Ordinal))
        {
            map.Copy(source, shape, ModelComponents.SingleFile, ldmPrefix + "ln_final." + name["text_model.final_layer_norm.".Length..]);
            return;
        }
        var layer = IndexAfter(name, "text_model.encoder.layers.");
        if (layer < 0)
        {
            map.Unmapped(source);
            return;
        }
        var layerPrefix = $"text_model.encoder.layers.{I(layer)}.";
        var rest = name[layerPrefix.Length..];
        var block = $"transformer.resblocks.{I(layer)}.";
        if (rest.StartsWith("self_attn.q_proj.", StringComparison.Ordinal) || rest.StartsWith("self_attn.k_proj.", StringComparison.Ordinal)
            || rest.StartsWith("self_attn.v_proj.", StringComparison.Ordinal))
        {
            var suffix = rest["self_attn.q_proj.".Length..];
            if (suffix is not ("weight" or "bias"))
            {
                map.Unmapped(source);
                return;
            }
            // q, k and v become one in_proj tensor; it is emitted when the first of the three is met.
            var originalPrefix = source.Name[..^(rest.Length)];
            var parts = new[] { "q_proj", "k_proj", "v_proj" }.Select(p => new TensorKey(source.Component, $"{originalPrefix}self_attn.{p}.{suffix}")).ToArray();
            if (map.IsClaimed(source))
                return;
            if (!parts.All(all.ContainsKey) || parts.Any(p => !all[p].SequenceEqual(shape)))
            {
                map.Unmapped(source);
                return;
            }
            foreach (var part in parts)
                map.Claim(part);
            long[] joined = [shape[0] * 3, .. shape[1..]];
            map.Add(new TensorRecipe(Target($"{block}attn.in_proj_{suffix}"), joined, TensorOp.Concat, parts, shape));
            return;
        }
        foreach (var (openClip, diffusers) in OpenClipLayerParts)
        {
            if (rest.StartsWith(diffusers, StringComparison.Ordinal))
            {
                map.Copy(source, shape, ModelComponents.SingleFile, ldmPrefix + block + openClip + rest[diffusers.Length..]);
                return;
            }
        }
        map.Unmapped(source);
    }

    private sealed class Builder(ModelFamily family)
    {
        private readonly List<TensorRecipe> _tensors = [];
        private readonly HashSet<TensorKey> _targets = [];
        private readonly HashSet<TensorKey> _claimed = [];
        private readonly List<TensorKey> _ignored = [];
        private readonly List<TensorKey> _unmapped = [];

        public void Copy(TensorKey source, long[] shape, string component, string? name)
        {
            if (name is null)
                Unmapped(source);
            else
                Add(new TensorRecipe(new TensorKey(component, name), shape, TensorOp.Copy, [source], shape));
        }

        public void Add(TensorRecipe recipe)
        {
            // Two sources for one target (e.g. a name with and without "text_model."): the first wins.
            if (_targets.Add(recipe.Target))
                _tensors.Add(recipe);
            else
                _unmapped.AddRange(recipe.Sources);
        }

        public void Ignore(TensorKey source) => _ignored.Add(source);

        public void Unmapped(TensorKey source) => _unmapped.Add(source);

        public bool IsClaimed(TensorKey source) => _claimed.Contains(source);

        public void Claim(TensorKey source) => _claimed.Add(source);

        public KeyMapping Build() => new(family, _tensors, _ignored, _unmapped);
    }
}
