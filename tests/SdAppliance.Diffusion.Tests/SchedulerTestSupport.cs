using System.Text.Json;
using SdAppliance.Diffusion.Schedulers;
using SdAppliance.Torch;

namespace SdAppliance.Diffusion.Tests;

/// <summary>The scheduler fixtures (tests/fixtures/README.md) and comparisons shared by the scheduler tests.</summary>
internal static class SchedulerTestSupport
{
    public static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", name);

    public const string GoldenFile = "schedulers_golden.safetensors";

    /// <summary>The <c>schedulers</c> section of the reference manifest.</summary>
    public static JsonElement Manifest { get; } = JsonDocument.Parse(
        SchedulerConfig.QuoteNonFiniteLiterals(File.ReadAllText(Fixture("schedulers_manifest.json")))).RootElement.Clone();

    /// <summary>Stable Diffusion 1.5's scheduler_config.json, the base of every golden setup.</summary>
    public static SchedulerConfig BaseConfig => SchedulerConfig.FromJson(Manifest.GetProperty("scheduler_config").GetRawText());

    public static IEnumerable<string> SetupNames => Manifest.GetProperty("schedulers").EnumerateObject().Select(p => p.Name);

    public static JsonElement Setup(string name) => Manifest.GetProperty("schedulers").GetProperty(name);

    /// <summary>The setup as the reference built it: <c>Class.from_config(base, **overrides)</c>.</summary>
    public static Scheduler Build(string setup)
    {
        var s = Setup(setup);
        var overrides = SchedulerConfig.FromJson(s.GetProperty("overrides").GetRawText());
        return SchedulerRegistry.FromConfig(s.GetProperty("class").GetString()!, BaseConfig, overrides);
    }

    /// <summary>
    /// The README's tolerance for the scheduler goldens: |a − e| ≤ atol + rtol·|e| with both 1e-5
    /// (torch.allclose's form, as the manifest lists atol and rtol). The samples reach |x| ≈ 30
    /// (8.45 × a unit Gaussian), where float32 spacing is 2e-6, so a pure atol of 1e-5 would be
    /// only five ulps for values that went through ten steps of differently-ordered float32
    /// arithmetic; the relative term scales the bound with the magnitude.
    /// </summary>
    public const double GoldenTol = 1e-5;

    public static void AssertClose(Tensor expected, Tensor actual, string what, double atol = GoldenTol, double rtol = GoldenTol)
    {
        Assert.Equal(expected.Shape, actual.Shape);
        using var e64 = expected.To(DType.Float64);
        using var a64 = actual.To(DType.Float64);
        var e = e64.ToArray<double>();
        var a = a64.ToArray<double>();
        for (var i = 0; i < e.Length; i++)
        {
            var diff = Math.Abs(a[i] - e[i]);
            Assert.True(diff <= atol + rtol * Math.Abs(e[i]),
                $"{what}: element {i} is {a[i]:R}, expected {e[i]:R} (|diff| {diff:E2}, max |diff| {MaxAbsDiff(e, a):E2})");
        }
    }

    public static double MaxAbsDiff(double[] e, double[] a) => e.Zip(a, (x, y) => Math.Abs(x - y)).Max();

    public static double MaxAbsDiff(Tensor expected, Tensor actual)
    {
        using var e64 = expected.To(DType.Float64);
        using var a64 = actual.To(DType.Float64);
        return MaxAbsDiff(e64.ToArray<double>(), a64.ToArray<double>());
    }

    /// <summary>
    /// The fixtures' toy denoiser, <c>0.1·x_in + 0.01·(t/1000)</c>, in the reference's float32
    /// arithmetic (t/1000 and the product are float32 tensor ops there).
    /// </summary>
    public static Tensor ToyModel(Tensor modelInput, double t)
    {
        var shift = 0.01f * ((float)t / 1000f);
        using var scaled = modelInput.Mul(0.1);
        return scaled.Add(shift);
    }
}
