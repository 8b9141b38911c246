using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;

namespace SdAppliance.Models.Tests;

/// <summary>
/// A VAE given apart from the model (<see cref="ModelLoadOptions.Vae"/>): VAE files in the original layout written here
/// from the tiny-sd reference checkpoint's <c>first_stage_model.*</c> tensors, with the prefix or without, as
/// safetensors and as a pickled .ckpt; a diffusers VAE folder; and ones that do not fit.
/// </summary>
public sealed class SeparateVaeTests : IDisposable
{
    private static readonly string Fixtures = Path.Combine(AppContext.BaseDirectory, "Fixtures");
    private static readonly string TinyFolder = Path.Combine(Fixtures, "tiny-sd");
    private static readonly string TinyLdm = Path.Combine(Fixtures, "tiny-sd.ldm.safetensors");
    private const string ConvOutBias = "decoder.conv_out.bias";
    private readonly string temp = Directory.CreateTempSubdirectory("sdapp-vae-").FullName;

    public void Dispose() => Directory.Delete(temp, recursive: true);

    /// <summary>
    /// The reference VAE's tensors under their original-layout names (without <c>first_stage_model.</c> unless
    /// <paramref name="prefixed"/>), <paramref name="change"/> applied to each, plus the training-only tensors kl-f8 files carry.
    /// </summary>
    private static List<SafetensorsTensor> LdmVae(bool prefixed = false, Func<string, (long[] Shape, byte[] Bytes), (long[] Shape, byte[] Bytes)>? change = null)
    {
        using var reference = TensorFile.Open(TinyLdm);
        var tensors = new List<SafetensorsTensor>();
        foreach (var (key, shape) in reference.Shapes)
        {
            if (!key.StartsWith(LdmKeyMap.VaePrefix, StringComparison.Ordinal)) continue;
            var name = prefixed ? key : key[LdmKeyMap.VaePrefix.Length..];
            var bare = key[LdmKeyMap.VaePrefix.Length..];
            var (newShape, bytes) = change is null ? (shape, reference.ReadBytes(key)) : change(bare, (shape, reference.ReadBytes(key)));
            tensors.Add(new SafetensorsTensor(name, reference.DTypeOf(key), newShape, bytes));
        }
        // Left out as A1111's load_vae_dict leaves them: the autoencoder's loss (its logvar) and LitEma's buffers.
        tensors.Add(new SafetensorsTensor("loss.logvar", SafetensorsDType.F32, [], BitConverter.GetBytes(0f)));
        tensors.Add(new SafetensorsTensor("model_ema.decay", SafetensorsDType.F32, [], BitConverter.GetBytes(0.9999f)));
        return tensors;
    }

    private const float BiasShift = 0.125f;

    /// <summary>The decoder's last bias moved by <see cref="BiasShift"/>: the decoded image moves by that much everywhere.</summary>
    private static (long[] Shape, byte[] Bytes) ShiftBias(string bare, (long[] Shape, byte[] Bytes) tensor)
    {
        if (bare != ConvOutBias) return tensor;
        var values = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(tensor.Bytes.AsSpan());
        for (var i = 0; i < values.Length; i++) values[i] += BiasShift;
        return tensor;
    }

    private static float[] Decode(StableDiffusionModel model)
    {
        using var generator = new Generator(7);
        using var latents = torch.Randn([1, model.LatentChannels, 8, 8], generator);
        using var inference = Autograd.InferenceMode();
        using var decoded = model.DecodeLatents(latents);
        return decoded.ToArray<float>();
    }

    [Theory]
    [InlineData(".safetensors", false)]
    [InlineData(".safetensors", true)]
    [InlineData(".ckpt", false)]
    public void AVaeFileChangesTheDecodedImage(string extension, bool prefixed)
    {
        var file = Path.Combine(temp, "shifted" + extension);
        var tensors = LdmVae(prefixed, ShiftBias);
        if (extension == ".ckpt") TorchCheckpointWriter.Write(file, tensors);
        else SafetensorsFile.Write(file, tensors);

        using var own = ModelLoader.Load(TinyFolder);
        using var withVae = ModelLoader.Load(TinyFolder, new ModelLoadOptions(Vae: file));
        Assert.Null(own.VaePath);
        Assert.Equal(Path.GetFullPath(file), withVae.VaePath);
        var before = Decode(own);
        var after = Decode(withVae);
        Assert.Equal(before.Length, after.Length);
        // conv_out's bias is added last, so every pixel moves by the shift; float32 rounding of a sum of numbers
        // of size ~1 is ~1e-7 each side, so 1e-5 is a wide margin, and far below the shift.
        var worst = before.Zip(after, (b, a) => Math.Abs(a - b - BiasShift)).Max();
        Assert.True(worst < 1e-5, $"the decoded image moved by the shift ± {worst}");
        // The VAE alone is replaced: the UNet is the model's.
        using var u1 = own.Unet.StateDict();
        using var u2 = withVae.Unet.StateDict();
        foreach (var (name, t) in u1) Assert.True(t.ToBytes().AsSpan().SequenceEqual(u2[name].ToBytes()), name);
    }

    [Fact]
    public void AVaeFolderAndAWholeCheckpointGiveTheirVae()
    {
        // The reference folder's vae/ and the reference single file's first_stage_model.* are the model's own VAE,
        // so the decoded image is the same, bit for bit.
        var folder = Path.Combine(temp, "vae-folder");
        Directory.CreateDirectory(folder);
        foreach (var file in Directory.GetFiles(Path.Combine(TinyFolder, "vae"))) File.Copy(file, Path.Combine(folder, Path.GetFileName(file)));
        using var own = ModelLoader.Load(TinyFolder);
        var expected = Decode(own);
        foreach (var vae in new[] { folder, TinyLdm })
        {
            using var model = ModelLoader.Load(TinyFolder, new ModelLoadOptions(Vae: vae));
            Assert.Equal(expected, Decode(model));
        }
    }

    [Fact]
    public void ADiffusersVaeWithTheOldAttentionNamesGivesItsVae()
    {
        // Before diffusers 0.14 the mid-block attention was query/key/value/proj_attn (stabilityai/sd-vae-ft-mse still is):
        // renamed back, the reference folder's VAE decodes as the model's own, bit for bit.
        (string Current, string Legacy)[] renames = [("to_q.", "query."), ("to_k.", "key."), ("to_v.", "value."), ("to_out.0.", "proj_attn.")];
        using var own = TensorFile.Open(Path.Combine(TinyFolder, "vae", "diffusion_pytorch_model.safetensors"));
        var renamed = 0;
        var tensors = own.Shapes.Select(kv =>
        {
            var name = kv.Key;
            foreach (var (current, legacy) in renames)
                if (name.Contains(".attentions.0." + current, StringComparison.Ordinal))
                {
                    name = name.Replace(".attentions.0." + current, ".attentions.0." + legacy, StringComparison.Ordinal);
                    renamed++;
                }
            return new SafetensorsTensor(name, own.DTypeOf(kv.Key), kv.Value, own.ReadBytes(kv.Key));
        }).ToList();
        Assert.Equal(16, renamed);  // 4 projections × weight and bias × encoder and decoder
        var file = Path.Combine(temp, "old-names.safetensors");
        SafetensorsFile.Write(file, tensors);
        using var model = ModelLoader.Load(TinyFolder);
        using var withVae = ModelLoader.Load(TinyFolder, new ModelLoadOptions(Vae: file));
        Assert.Equal(Decode(model), Decode(withVae));
    }

    [Fact]
    public void AVaeOfAnotherShapeIsRefusedNamingTheFileAndTheTensor()
    {
        var file = Path.Combine(temp, "eight-channels.safetensors");
        // A VAE with 8 latent channels (quant_conv maps 2×8 moments): not this model's 4.
        SafetensorsFile.Write(file, LdmVae(change: (bare, t) => bare == "quant_conv.weight" ? ([16, 16, 1, 1], new byte[16 * 16 * 4]) : t));
        var e = Assert.Throws<UserInputException>(() => ModelLoader.Load(TinyFolder, new ModelLoadOptions(Vae: file)));
        Assert.Contains(file, e.Message, StringComparison.Ordinal);
        Assert.Contains("quant_conv.weight is [16, 16, 1, 1] in the file", e.Message, StringComparison.Ordinal);
        Assert.Contains("VAE made for this model", e.Message, StringComparison.Ordinal);

        // An up-block tensor is named as the file names it, with the model's name beside it.
        var renamed = Path.Combine(temp, "wide.safetensors");
        SafetensorsFile.Write(renamed, LdmVae(change: (bare, t) => bare == ConvOutBias ? ([t.Shape[0] + 1], new byte[(t.Shape[0] + 1) * 4]) : t));
        var wide = Assert.Throws<UserInputException>(() => ModelLoader.Load(TinyFolder, new ModelLoadOptions(Vae: renamed)));
        Assert.Contains(renamed, wide.Message, StringComparison.Ordinal);
        Assert.Contains(ConvOutBias, wide.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void WhatIsNotAVaeIsRefused()
    {
        var missing = Path.Combine(temp, "none.safetensors");
        var e = Assert.Throws<UserInputException>(() => ModelLoader.Load(TinyFolder, new ModelLoadOptions(Vae: missing)));
        Assert.Contains("vae", e.Message, StringComparison.Ordinal);
        Assert.Contains(missing, e.Message, StringComparison.Ordinal);

        var lora = Path.Combine(temp, "not-a-vae.safetensors");
        SafetensorsFile.Write(lora, [new SafetensorsTensor("lora_unet_down.lora_up.weight", SafetensorsDType.F32, [2, 2], new byte[16])]);
        var notVae = Assert.Throws<UserInputException>(() => ModelLoader.Load(TinyFolder, new ModelLoadOptions(Vae: lora)));
        Assert.Contains(lora, notVae.Message, StringComparison.Ordinal);
        Assert.Contains("lora_unet_down.lora_up.weight", notVae.Message, StringComparison.Ordinal);
    }
}
