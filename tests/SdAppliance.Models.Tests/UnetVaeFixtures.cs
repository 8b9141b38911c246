using SdAppliance.Formats;
using SdAppliance.Models.Unet;
using SdAppliance.Models.Vae;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using SdAppliance.Torch.Serialization;

namespace SdAppliance.Models.Tests;

/// <summary>The tiny fixture UNet and VAE with their weights, the golden tensors, and comparisons.</summary>
internal static class UnetVaeFixtures
{
    /// <summary>
    /// The fixtures README's tolerance for the UNet and VAE goldens (atol 1e-4, rtol 1e-4): outputs
    /// are O(1) float32 values after dozens of convolutions, group norms and attention softmaxes whose
    /// summation order differs between libtorch builds and our call sequence (e.g. matmul·scale versus
    /// baddbmm with alpha), each contributing float32 rounding (~1e-7 relative) that accumulates.
    /// </summary>
    public const double GoldenAtol = 1e-4;
    public const double GoldenRtol = 1e-4;

    public static string Fixture(params string[] parts) => Path.Combine([AppContext.BaseDirectory, "Fixtures", .. parts]);

    /// <summary>The fixture models: the SD 1.x one and the SDXL-shaped one.</summary>
    public const string TinySd = "tiny-sd";
    public const string TinySdxl = "tiny-sdxl";

    public static UNet2DConditionConfig TinyUnetConfig(string model = TinySd) => UNet2DConditionConfig.Load(Fixture(model, "unet", "config.json"));

    public static AutoencoderKLConfig TinyVaeConfig(string model = TinySd) => AutoencoderKLConfig.Load(Fixture(model, "vae", "config.json"));

    /// <summary>The tiny UNet of <paramref name="model"/>, built without initialisation and loaded strictly from the fixture file.</summary>
    public static UNet2DConditionModel LoadTinyUnet(string model = TinySd)
    {
        UNet2DConditionModel unet;
        using (Init.Skip()) unet = new UNet2DConditionModel(TinyUnetConfig(model));
        LoadWeights(unet, Fixture(model, "unet", "diffusion_pytorch_model.safetensors"));
        return unet.Eval();
    }

    public static AutoencoderKL LoadTinyVae(string model = TinySd)
    {
        AutoencoderKL vae;
        using (Init.Skip()) vae = new AutoencoderKL(TinyVaeConfig(model));
        LoadWeights(vae, Fixture(model, "vae", "diffusion_pytorch_model.safetensors"));
        return vae.Eval();
    }

    private static void LoadWeights(Module model, string path)
    {
        using var reader = TensorFile.Open(path);
        var weights = reader.ReadAll();
        try
        {
            model.LoadStateDict(weights, strict: true);
        }
        finally
        {
            foreach (var t in weights.Values) t.Dispose();
        }
    }

    /// <summary>A golden tensor of <paramref name="file"/> (a path under Fixtures/, such as <c>sdxl/unet_golden.safetensors</c>), copied out of the mapped file.</summary>
    public static Tensor Golden(string file, string name)
    {
        using var reader = TensorFile.Open(Fixture(file));
        using var mapped = reader.ReadTensor(name);
        return mapped.Clone();
    }

    public static double[] Values(Tensor t)
    {
        using var c = t.Contiguous();
        using var d = c.To(DType.Float64);
        return d.ToArray<double>();
    }

    /// <summary>Largest |a − b|, for messages.</summary>
    public static double MaxAbsDiff(Tensor a, Tensor b)
    {
        var x = Values(a);
        var y = Values(b);
        Assert.Equal(x.Length, y.Length);
        return x.Zip(y, (p, q) => Math.Abs(p - q)).Max();
    }

    /// <summary>|expected − actual| ≤ atol + rtol·|expected| everywhere, naming the first offender.</summary>
    public static void AssertClose(Tensor expected, Tensor actual, double atol, double rtol, string what)
    {
        Assert.Equal(expected.Shape, actual.Shape);
        var e = Values(expected);
        var a = Values(actual);
        for (var i = 0; i < e.Length; i++)
        {
            if (Math.Abs(e[i] - a[i]) <= atol + rtol * Math.Abs(e[i])) continue;
            var max = e.Zip(a, (x, y) => Math.Abs(x - y)).Max();
            Assert.Fail($"{what}: element {i} expected {e[i]:R}, got {a[i]:R} (max |diff| {max:E2})");
        }
    }
}
