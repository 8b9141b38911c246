using System.Runtime.InteropServices;
using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Formats.Pickle;
using SdAppliance.Models.Conversion;

namespace SdAppliance.Models.Tests;

/// <summary>
/// Pruned and EMA-only exports of a training checkpoint: a .ckpt built here as the LDM trainer saves one
/// (<c>{"state_dict": {model..., model_ema...}, "optimizer_states": [...], "global_step": N}</c>) from the
/// tiny-sd reference file, each <c>model.*</c> weight given an EMA shadow of different values.
/// </summary>
public sealed class PruneAndEmaExportTests : IDisposable
{
    private static readonly string TinyLdm = Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sd.ldm.safetensors");
    private static readonly string TinyFolder = Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sd");
    private readonly string temp = Directory.CreateTempSubdirectory("sdapp-prune-").FullName;

    public void Dispose() => Directory.Delete(temp, recursive: true);

    /// <summary>The shadow's values: 0.5 × live − 0.25, computed the same way (in float32) when building and when checking, so
    /// the comparison is exact; it equals the live value only at w = −0.5, so a file holding the live weights fails.</summary>
    private static float Shadow(float live) => 0.5f * live - 0.25f;

    private static byte[] ShadowBytes(byte[] live)
    {
        var values = MemoryMarshal.Cast<byte, float>(live).ToArray();
        for (var i = 0; i < values.Length; i++) values[i] = Shadow(values[i]);
        return MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
    }

    private sealed record Built(string Path, int ModelKeys, long EmaBytes, long OptimizerBytes);

    /// <summary>The training checkpoint, and what it holds beyond the model.</summary>
    private Built BuildTrainingCheckpoint()
    {
        using var reference = TensorFile.Open(TinyLdm);
        var stateDict = new PickleDict(isOrdered: true);
        var shadows = new List<SafetensorsTensor>();
        var modelKeys = 0;
        foreach (var (name, shape) in reference.Shapes)
        {
            var bytes = reference.ReadBytes(name);
            stateDict.Set(name, new SafetensorsTensor(name, reference.DTypeOf(name), shape, bytes));
            if (LdmEma.ShadowOf(name) is not { } shadow) continue;
            Assert.Equal(SafetensorsDType.F32, reference.DTypeOf(name));
            shadows.Add(new SafetensorsTensor(shadow, SafetensorsDType.F32, shape, ShadowBytes(bytes)));
            modelKeys++;
        }
        foreach (var s in shadows) stateDict.Set(s.Name, s);
        stateDict.Set("model_ema.decay", new SafetensorsTensor("model_ema.decay", SafetensorsDType.F32, [], BitConverter.GetBytes(0.9999f)));
        stateDict.Set("model_ema.num_updates", new SafetensorsTensor("model_ema.num_updates", SafetensorsDType.I32, [], BitConverter.GetBytes(10)));
        // Adam's moments for one parameter, as Lightning saves them.
        var exp = new SafetensorsTensor("exp_avg", SafetensorsDType.F32, [64, 4], new byte[64 * 4 * 4]);
        var paramState = new PickleDict();
        paramState.Set("exp_avg", exp);
        paramState.Set("step", 10L);
        var state = new PickleDict();
        state.Set(0L, paramState);
        var optimizer = new PickleDict();
        optimizer.Set("state", state);
        var root = new PickleDict();
        root.Set("state_dict", stateDict);
        root.Set("optimizer_states", new List<object?> { optimizer });
        root.Set("global_step", 10L);
        var path = Path.Combine(temp, "trained.ckpt");
        TorchSaveWriter.Write(path, root);
        return new Built(path, modelKeys, shadows.Sum(s => s.ByteLength) + 8, exp.ByteLength);
    }

    [Fact]
    public void PrunedLeavesOutTheEmaAndTheOptimizerAndKeepsTheLiveWeights()
    {
        var built = BuildTrainingCheckpoint();
        Assert.True(built.ModelKeys > 100, "the fixture's UNet has its weights under model.diffusion_model.");

        var pruned = Path.Combine(temp, "pruned.ckpt");
        var result = ModelConverter.Convert(built.Path, pruned, new ConversionOptions(Prune: true));

        using var reference = TensorFile.Open(TinyLdm);
        Assert.Equal(reference.Shapes.Count, result.TensorCount);
        using (var checkpoint = TorchCheckpoint.Open(pruned))
        {
            // Only the state dict is written: no optimizer_states, no global_step.
            var rootKeys = Assert.IsType<PickleDict>(checkpoint.Root).Keys.ToList();
            Assert.Equal(["state_dict"], rootKeys);
        }
        using (var file = TensorFile.Open(pruned))
        {
            Assert.Equal(reference.Shapes.Keys.Order(StringComparer.Ordinal), file.Shapes.Keys.Order(StringComparer.Ordinal));
            Assert.DoesNotContain(file.Shapes.Keys, k => k.StartsWith("model_ema.", StringComparison.Ordinal));
            foreach (var name in reference.Names)
                Assert.True(reference.ReadBytes(name).AsSpan().SequenceEqual(file.ReadBytes(name)), $"{name} is not the live weight");
        }
        // The same tensors written from the reference directly: the pruned file is that size, so the training
        // file was larger by at least the EMA and optimizer bytes it held.
        var plain = Path.Combine(temp, "plain.ckpt");
        ModelConverter.Convert(TinyLdm, plain);
        Assert.Equal(new FileInfo(plain).Length, new FileInfo(pruned).Length);
        Assert.True(new FileInfo(built.Path).Length - new FileInfo(pruned).Length >= built.EmaBytes + built.OptimizerBytes);

        // Without prune the EMA copy travels (a same-layout conversion keeps every tensor of the state dict).
        var kept = Path.Combine(temp, "kept.safetensors");
        ModelConverter.Convert(built.Path, kept);
        using var keptFile = TensorFile.Open(kept);
        Assert.Equal(reference.Shapes.Count + built.ModelKeys + 2, keptFile.Shapes.Count);
    }

    [Fact]
    public void PrunedHalfStoresFloat16()
    {
        var built = BuildTrainingCheckpoint();
        var output = Path.Combine(temp, "pruned-half.safetensors");
        ModelConverter.Convert(built.Path, output, new ConversionOptions(Half: true, Prune: true));
        using var file = TensorFile.Open(output);
        using var reference = TensorFile.Open(TinyLdm);
        Assert.Equal(reference.Shapes.Count, file.Shapes.Count);
        Assert.All(file.Names, n => Assert.Equal(SafetensorsDType.F16, file.DTypeOf(n)));
        // Half of float32's bytes: 2 bytes an element instead of 4.
        Assert.Equal(reference.Names.Sum(n => reference.ReadBytes(n).Length) / 2, file.Names.Sum(n => (long)file.ReadBytes(n).Length));
    }

    [Fact]
    public void EmaOnlyWritesTheShadowsAsTheModelWeights()
    {
        var built = BuildTrainingCheckpoint();
        var output = Path.Combine(temp, "ema.safetensors");
        var result = ModelConverter.Convert(built.Path, output, new ConversionOptions(EmaOnly: true));
        Assert.Empty(result.Warnings);

        using var reference = TensorFile.Open(TinyLdm);
        using var file = TensorFile.Open(output);
        Assert.Equal(reference.Shapes.Keys.Order(StringComparer.Ordinal), file.Shapes.Keys.Order(StringComparer.Ordinal));
        var shadowed = 0;
        foreach (var name in reference.Names)
        {
            var live = MemoryMarshal.Cast<byte, float>(reference.ReadBytes(name)).ToArray();
            var written = MemoryMarshal.Cast<byte, float>(file.ReadBytes(name)).ToArray();
            if (name.StartsWith("model.", StringComparison.Ordinal))
            {
                // Exact: the shadow bytes are copied, not recomputed.
                Assert.Equal(live.Select(Shadow), written);
                shadowed++;
            }
            else
            {
                Assert.Equal(live, written);  // the VAE and the text encoder have no EMA copy: their live weights
            }
        }
        Assert.Equal(built.ModelKeys, shadowed);

        // To a diffusers folder the UNet is the EMA one too.
        var folder = Path.Combine(temp, "ema-folder");
        ModelConverter.Convert(built.Path, folder, new ConversionOptions(ConfigDirectory: TinyFolder, EmaOnly: true));
        using var unet = TensorFile.Open(Path.Combine(folder, "unet", "diffusion_pytorch_model.safetensors"));
        using var liveUnet = TensorFile.Open(Path.Combine(TinyFolder, "unet", "diffusion_pytorch_model.safetensors"));
        foreach (var name in liveUnet.Names)
            Assert.Equal(MemoryMarshal.Cast<byte, float>(liveUnet.ReadBytes(name)).ToArray().Select(Shadow), MemoryMarshal.Cast<byte, float>(unet.ReadBytes(name)).ToArray());
    }

    [Fact]
    public void EmaOnlyRefusesAFileWithoutEma()
    {
        var output = Path.Combine(temp, "ema.safetensors");
        var e = Assert.Throws<UserInputException>(() => ModelConverter.Convert(TinyLdm, output, new ConversionOptions(EmaOnly: true)));
        Assert.Contains(TinyLdm, e.Message, StringComparison.Ordinal);
        Assert.Contains("no EMA weights", e.Message, StringComparison.Ordinal);
        Assert.Contains("model_ema.", e.Message, StringComparison.Ordinal);
        Assert.False(File.Exists(output));

        var folder = Assert.Throws<UserInputException>(() => ModelConverter.Convert(TinyFolder, output, new ConversionOptions(EmaOnly: true)));
        Assert.Contains("diffusers folder", folder.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void EmaOnlyRefusesAShadowOfAnotherShape()
    {
        using var reference = TensorFile.Open(TinyLdm);
        var input = Path.Combine(temp, "bad-ema.safetensors");
        const string weight = "model.diffusion_model.out.2.bias";
        var shape = reference.Shapes[weight];
        SafetensorsFile.Write(input,
        [
            new SafetensorsTensor(weight, SafetensorsDType.F32, shape, reference.ReadBytes(weight)),
            new SafetensorsTensor("model_ema.diffusion_modelout2bias", SafetensorsDType.F32, [shape[0] + 1], new byte[(shape[0] + 1) * 4]),
        ]);
        var e = Assert.Throws<UserInputException>(() => ModelConverter.Convert(input, Path.Combine(temp, "out.safetensors"), new ConversionOptions(EmaOnly: true)));
        Assert.Contains("model_ema.diffusion_modelout2bias", e.Message, StringComparison.Ordinal);
        Assert.Contains(weight, e.Message, StringComparison.Ordinal);
    }
}
