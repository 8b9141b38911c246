using System.Runtime.InteropServices;
using System.Security.Cryptography;
using SdAppliance.Formats;
using SdAppliance.Imaging;
using static SdAppliance.Cli.Tests.GenerateCommandTests;

namespace SdAppliance.Cli.Tests;

/// <summary><c>sdapp generate --vae</c> and <c>sdapp convert --prune / --ema-only</c> in-process on the tiny fixture.</summary>
public sealed class VaeAndPruneCommandTests : IDisposable
{
    private readonly string temp = Directory.CreateTempSubdirectory("sdapp-vae-cli-").FullName;

    public void Dispose() => Directory.Delete(temp, recursive: true);

    /// <summary>The tiny model's VAE (diffusers names, one file) with <paramref name="change"/> applied to the decoder's last bias.</summary>
    private string Vae(string name, Func<float[], float[]> change)
    {
        using var own = TensorFile.Open(Path.Combine(TinyFolder, "vae", "diffusion_pytorch_model.safetensors"));
        var tensors = own.Shapes.Select(kv =>
        {
            if (kv.Key != "decoder.conv_out.bias") return new SafetensorsTensor(kv.Key, own.DTypeOf(kv.Key), kv.Value, own.ReadBytes(kv.Key));
            var values = change(MemoryMarshal.Cast<byte, float>(own.ReadBytes(kv.Key)).ToArray());
            return new SafetensorsTensor(kv.Key, SafetensorsDType.F32, [values.Length], MemoryMarshal.AsBytes(values.AsSpan()).ToArray());
        }).ToList();
        var file = Path.Combine(temp, name);
        SafetensorsFile.Write(file, tensors);
        return file;
    }

    [Fact]
    public void GenerateWithAVaeDrawsWithItAndNamesItInThePngInfo()
    {
        var vae = Vae("brighter.safetensors", b => [.. b.Select(v => v + 0.5f)]);
        var plain = Path.Combine(temp, "plain.png");
        var withVae = Path.Combine(temp, "vae.png");
        var (exit, _, error) = Invoke(["generate", "--model", TinyFolder, .. P1, "--output", plain]);
        Assert.True(exit == 0, error);
        (exit, _, error) = Invoke(["generate", "--model", TinyFolder, .. P1, "--vae", vae, "--output", withVae]);
        Assert.True(exit == 0, error);

        // 0.5 more in every decoded value is 0.5 × 127.5 ≈ 64 levels where neither image clips; never less.
        var a = ImageCodec.Load(plain).Pixels;
        var b = ImageCodec.Load(withVae).Pixels;
        Assert.All(Enumerable.Range(0, a.Length), i => Assert.True(b[i] >= a[i], $"byte {i}: {a[i]} -> {b[i]}"));
        Assert.InRange(Enumerable.Range(0, a.Length).Max(i => b[i] - a[i]), 63, 64);

        var parameters = ParametersOf(withVae);
        Assert.Equal("brighter.safetensors", parameters["VAE"]);
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(vae)))[..10], parameters["VAE hash"]);
        Assert.Null(ParametersOf(plain)["VAE"]);
    }

    [Fact]
    public void AVaeThatDoesNotFitOrIsMissingIsOneErrorLine()
    {
        var wide = Vae("wide.safetensors", b => [.. b, 0f]);
        var (exit, _, error) = Invoke(["generate", "--model", TinyFolder, .. P1, "--vae", wide, "--output", Path.Combine(temp, "x.png")]);
        Assert.Equal(1, exit);
        Assert.StartsWith($"error: {wide}: ", error, StringComparison.Ordinal);
        Assert.Contains("decoder.conv_out.bias", error, StringComparison.Ordinal);
        Assert.Single(error.TrimEnd().Split('\n'));

        var missing = Path.Combine(temp, "none.safetensors");
        (exit, _, error) = Invoke(["generate", "--model", TinyFolder, .. P1, "--vae", missing, "--output", Path.Combine(temp, "y.png")]);
        Assert.Equal(1, exit);
        Assert.StartsWith("error: --vae: ", error, StringComparison.Ordinal);
        Assert.Contains(missing, error, StringComparison.Ordinal);
    }

    [Fact]
    public void ConvertPrunesAndRefusesEmaOnlyWithoutEma()
    {
        // The reference file plus one EMA tensor: --prune leaves it out.
        var input = Path.Combine(temp, "with-ema.safetensors");
        using (var reference = TensorFile.Open(TinyLdm))
            SafetensorsFile.Write(input,
            [
                .. reference.Shapes.Select(kv => new SafetensorsTensor(kv.Key, reference.DTypeOf(kv.Key), kv.Value, reference.ReadBytes(kv.Key))),
                new SafetensorsTensor("model_ema.diffusion_modelout2bias", SafetensorsDType.F32, reference.Shapes["model.diffusion_model.out.2.bias"],
                    reference.ReadBytes("model.diffusion_model.out.2.bias")),
            ]);
        var pruned = Path.Combine(temp, "pruned.safetensors");
        var (exit, output, error) = Invoke("convert", "--input", input, "--output", pruned, "--prune");
        Assert.True(exit == 0, error);
        Assert.Equal($"wrote {pruned} (safetensors file, SD 1.x, 600 tensors, pruned)", output.Trim());

        (exit, _, error) = Invoke("convert", "--input", TinyLdm, "--output", Path.Combine(temp, "ema.safetensors"), "--ema-only");
        Assert.Equal(1, exit);
        Assert.StartsWith($"error: {TinyLdm}: has no EMA weights", error, StringComparison.Ordinal);

        (exit, _, error) = Invoke("convert", "--input", TinyLdm, "--output", Path.Combine(temp, "onnx"), "--to", "onnx", "--prune");
        Assert.Equal(1, exit);
        Assert.Contains("--prune is for checkpoint files", error, StringComparison.Ordinal);
    }
}
