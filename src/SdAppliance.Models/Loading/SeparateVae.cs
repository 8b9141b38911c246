using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Torch;
using SdAppliance.Torch.Serialization;

namespace SdAppliance.Models.Loading;

/// <summary>
/// A VAE given apart from the model (kohya's <c>--vae</c>, the DreamBooth scripts' <c>pretrained_vae_name_or_path</c>,
/// A1111's <c>sd_vae</c>), as diffusers-named tensors for the model's own VAE architecture: a diffusers VAE folder
/// (<c>config.json</c> + <c>diffusion_pytorch_model.safetensors</c>, or a model folder's <c>vae/</c>), or one file
/// (<c>.safetensors</c>, <c>.pt</c>, <c>.ckpt</c>) in the original layout (<c>encoder.*</c>, <c>decoder.*</c>,
/// <c>quant_conv.*</c>, <c>post_quant_conv.*</c>, possibly under <c>first_stage_model.</c>, as a whole checkpoint
/// holds them) or in the diffusers layout. As A1111's <c>load_vae_dict</c> does, the autoencoder's training loss
/// (<c>loss.*</c>: the discriminator and <c>logvar</c>, which kl-f8 files carry) and the EMA bookkeeping are left out.
/// </summary>
internal static class SeparateVae
{
    /// <summary>The tensors, each read when asked for, and for each the name it has in the file (for messages).</summary>
    internal sealed record Weights(IReadOnlyDictionary<string, Func<Tensor>> Tensors, IReadOnlyDictionary<string, string> FileNames, string WeightsFile);

    /// <param name="open">Opens a weights file, which the caller keeps open while the tensors are read and then disposes.</param>
    public static Weights Open(string path, Func<string, TensorFile> open)
    {
        if (Directory.Exists(path))
        {
            var folder = File.Exists(Path.Combine(path, "config.json")) ? path
                : File.Exists(Path.Combine(path, ModelComponents.Vae, "config.json")) ? Path.Combine(path, ModelComponents.Vae)
                : throw new UserInputException(path, "is not a diffusers VAE folder: it has no config.json (nor vae/config.json)",
                    "give a VAE folder (config.json + diffusion_pytorch_model.safetensors) or a VAE file (.safetensors, .pt, .ckpt)");
            var weightsFile = ModelLoader.WeightsFile(folder);
            var source = open(weightsFile);
            return DiffusersNamed(source, [.. source.Names], n => n);
        }
        if (!File.Exists(path))
            throw new UserInputException(path, "the VAE does not exist", "give a VAE file (.safetensors, .pt, .ckpt) or a diffusers VAE folder");
        return FromSingleFile(open(path));
    }

    private static bool IsTrainingOnly(string key) => key.StartsWith("loss.", StringComparison.Ordinal) || LdmEma.IsEmaKey(key);

    private static Weights FromSingleFile(TensorFile source)
    {
        var keys = source.Names.Where(k => !IsTrainingOnly(k)).ToList();
        // A whole checkpoint (or a VAE saved with its prefix): its first_stage_model.* tensors, as kohya's load_vae takes them.
        var prefixed = keys.Any(k => k.StartsWith(LdmKeyMap.VaePrefix, StringComparison.Ordinal));
        var own = prefixed ? keys.Where(k => k.StartsWith(LdmKeyMap.VaePrefix, StringComparison.Ordinal)).ToList() : keys;
        if (own.Count == 0)
            throw new UserInputException(source.Path, "has no VAE weights (no encoder.*, decoder.*, quant_conv.* tensors)",
                "give a VAE file or a diffusers VAE folder");
        string Bare(string key) => prefixed ? key[LdmKeyMap.VaePrefix.Length..] : key;
        if (own.Any(k => Bare(k).StartsWith("encoder.down_blocks.", StringComparison.Ordinal) || Bare(k).StartsWith("decoder.up_blocks.", StringComparison.Ordinal)))
        {
            // diffusers' names already (the diffusion_pytorch_model.safetensors of a VAE repository, renamed).
            return DiffusersNamed(source, own, Bare);
        }
        // The original layout: mapped as a checkpoint's first_stage_model.* would be.
        var fileKey = own.ToDictionary(k => prefixed ? k : LdmKeyMap.VaePrefix + k, k => k, StringComparer.Ordinal);
        var mapping = LdmKeyMap.ToDiffusers(fileKey.ToDictionary(kv => kv.Key, kv => source.Shapes[kv.Value], StringComparer.Ordinal));
        if (mapping.Unmapped.Count > 0)
            throw new UserInputException(source.Path,
                $"is not a VAE in the original layout: no rule maps {string.Join(", ", mapping.Unmapped.Take(3).Select(k => fileKey.GetValueOrDefault(k.Name, k.Name)))}",
                "give a VAE file (encoder.*, decoder.*, quant_conv.*, post_quant_conv.*) or a diffusers VAE folder");
        var recipes = mapping.Component(ModelComponents.Vae).ToList();
        return new Weights(
            recipes.ToDictionary(r => r.Target.Name, r => (Func<Tensor>)(() => Materialize(source, r, fileKey)), StringComparer.Ordinal),
            recipes.ToDictionary(r => r.Target.Name, r => fileKey[r.Sources[0].Name], StringComparer.Ordinal), source.Path);
    }

    // The mid-block attention's names before diffusers 0.14 (stabilityai/sd-vae-ft-mse's files still have them), and today's.
    private static readonly (string Legacy, string Current)[] LegacyAttention =
        [("query.", "to_q."), ("key.", "to_k."), ("value.", "to_v."), ("proj_attn.", "to_out.0.")];

    /// <summary>A diffusers-named VAE's tensors, each <paramref name="fileKeys"/> entry named by <paramref name="bare"/> and brought to today's attention names.</summary>
    private static Weights DiffusersNamed(TensorFile source, IReadOnlyList<string> fileKeys, Func<string, string> bare)
    {
        var named = fileKeys.ToDictionary(k => CurrentName(bare(k)), k => k, StringComparer.Ordinal);
        return new Weights(named.ToDictionary(kv => kv.Key, kv => (Func<Tensor>)(() => source.ReadTensor(kv.Value)), StringComparer.Ordinal), named, source.Path);
    }

    private static string CurrentName(string name)
    {
        const string attention = "mid_block.attentions.0.";
        var at = name.IndexOf(attention, StringComparison.Ordinal);
        if (at < 0) return name;
        var part = name[(at + attention.Length)..];
        foreach (var (legacy, current) in LegacyAttention)
            if (part.StartsWith(legacy, StringComparison.Ordinal))
                return name[..(at + attention.Length)] + current + part[legacy.Length..];
        return name;
    }

    private static Tensor Materialize(TensorFile source, TensorRecipe recipe, IReadOnlyDictionary<string, string> fileKey)
    {
        if (recipe.Op == TensorOp.Copy) return source.ReadTensor(fileKey[recipe.Sources[0].Name]);
        var (dtype, bytes) = KeyMapping.Materialize(recipe, key => (source.DTypeOf(fileKey[key.Name]), source.ReadBytes(fileKey[key.Name])));
        return torch.FromBytes(bytes, recipe.Shape.ToArray(), TensorFiles.ToTorch(dtype, recipe.Target.Name, source.Path));
    }
}
