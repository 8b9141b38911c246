using System.Text.Json;
using SdAppliance.Diffusion.Schedulers;
using SdAppliance.Formats;
using SdAppliance.Torch;
using SdAppliance.Torch.Serialization;
using static SdAppliance.Diffusion.Tests.SchedulerTestSupport;

namespace SdAppliance.Diffusion.Tests;

/// <summary>
/// tests/fixtures/schedulers_extra_golden.safetensors: diffusers' own scheduler modules (same commit
/// and PyTorch build as the shared fixtures, made by make_schedulers_extra_golden.py) on what the
/// shared goldens leave out — UniPC, DPM++ SDE (with the Brownian tree replaced by per-stage
/// generator draws, our <c>noise_sampler independent</c>), the SDE variant of DPM-Solver++,
/// v-prediction loops of every class, and the trailing/linspace spacings. Same recipe and
/// tolerance as the shared scheduler goldens.
/// </summary>
public class SchedulerExtraGoldenTests
{
    private const string File = "schedulers_extra_golden.safetensors";

    private static JsonElement Recipe { get; } = LoadRecipe();

    private static JsonElement LoadRecipe()
    {
        using var golden = TensorFile.Open(Fixture(File));
        return JsonDocument.Parse(SchedulerConfig.QuoteNonFiniteLiterals(golden.Metadata["recipe"])).RootElement.Clone();
    }

    public static TheoryData<string> LoopSetups =>
        new(Recipe.EnumerateObject().Where(p => !p.Name.StartsWith("spacing/", StringComparison.Ordinal)).Select(p => p.Name));

    public static TheoryData<string> SpacingSetups =>
        new(Recipe.EnumerateObject().Where(p => p.Name.StartsWith("spacing/", StringComparison.Ordinal)).Select(p => p.Name));

    private static Scheduler Build(string setup)
    {
        var r = Recipe.GetProperty(setup);
        var overrides = SchedulerConfig.FromJson(r.GetProperty("overrides").GetRawText());
        var className = r.GetProperty("class").GetString()!;
        // The reference's SDE noise is one generator draw per stage: our independent sampler.
        if (className == "DPMSolverSDEScheduler") overrides = overrides with { NoiseSampler = "independent" };
        return SchedulerRegistry.FromConfig(className, BaseConfig, overrides);
    }

    [Theory]
    [MemberData(nameof(LoopSetups))]
    public void TimestepsSigmasAndInitNoise(string setup)
    {
        using var golden = TensorFile.Open(Fixture(File));
        foreach (var n in new[] { 10, 25 })
        {
            using var s = Build(setup);
            s.SetTimesteps(n);
            var expected = Recipe.GetProperty(setup).GetProperty($"n{n}");
            using var timesteps = golden.ReadTensor($"{setup}/n{n}/timesteps");
            Assert.Equal(timesteps.DType, s.Timesteps.DType);
            AssertTimesteps(timesteps, s, $"{setup} n{n}");
            Assert.Equal(expected.GetProperty("init_noise_sigma").GetDouble(), s.InitNoiseSigma);
            Assert.Equal(expected.GetProperty("order").GetInt32(), s.Order);
            using var sigmas = golden.ReadTensor($"{setup}/n{n}/sigmas", optional: true);
            if (sigmas is not null) AssertClose(sigmas, s.Sigmas!, $"{setup} n{n} sigmas");
        }
    }

    /// <summary>
    /// Every constructor setting of the reference class, defaults included, has the same value in
    /// our resolved config (a setting we do not model must be null there, i.e. unused).
    /// </summary>
    [Theory]
    [MemberData(nameof(LoopSetups))]
    public void ResolvedSettingsEqualTheReferenceConstructors(string setup)
    {
        using var s = Build(setup);
        using var ours = JsonDocument.Parse(SchedulerConfig.QuoteNonFiniteLiterals(s.Config.ToJson()));
        foreach (var p in Recipe.GetProperty(setup).GetProperty("config").EnumerateObject())
        {
            if (!ours.RootElement.TryGetProperty(p.Name, out var value))
            {
                Assert.True(p.Value.ValueKind == JsonValueKind.Null, $"{setup}: {p.Name} = {p.Value} is missing from our config");
                continue;
            }
            Assert.True(JsonElement.DeepEquals(p.Value, value), $"{setup}: {p.Name} is {value}, the reference has {p.Value}");
        }
    }

    [Theory]
    [MemberData(nameof(SpacingSetups))]
    public void TrailingAndLinspaceSpacings(string key)
    {
        using var golden = TensorFile.Open(Fixture(File));
        var parts = key.Split('/'); // spacing/Class/spacing/nN
        using var s = SchedulerRegistry.FromConfig(parts[1], BaseConfig, new SchedulerConfig { TimestepSpacing = parts[2] });
        s.SetTimesteps(int.Parse(parts[3][1..], System.Globalization.CultureInfo.InvariantCulture));
        using var timesteps = golden.ReadTensor(key + "/timesteps");
        Assert.Equal(timesteps.DType, s.Timesteps.DType);
        AssertTimesteps(timesteps, s, key);
        Assert.Equal(Recipe.GetProperty(key).GetProperty("init_noise_sigma").GetDouble(), s.InitNoiseSigma);
        using var sigmas = golden.ReadTensor(key + "/sigmas", optional: true);
        if (sigmas is not null) AssertClose(sigmas, s.Sigmas!, key + " sigmas");
    }

    /// <summary>
    /// Integer timesteps must be identical. Fractional ones (Karras sigmas mapped back to t, DPM++
    /// SDE's midpoints) go through diffusers' <c>_sigma_to_t</c>, which interpolates in a table of
    /// float32 logs: NumPy's vectorised float32 log differs from the correctly rounded one by 1 ulp
    /// (≤ 2.4e-7) in about a fifth of the entries (and depends on the CPU's SIMD path), and the
    /// weight divides such differences by neighbouring log-sigma gaps of ≥ 3.3e-3, so t may move by
    /// up to ~3e-4. 1e-3 bounds that; a wrong sigma moves t by whole units.
    /// </summary>
    private static void AssertTimesteps(Tensor expected, Scheduler s, string what)
    {
        using var e64 = expected.To(DType.Float64);
        if (e64.ToArray<double>().All(v => v == Math.Round(v)))
            Assert.Equal(expected.ToBytes(), s.Timesteps.ToBytes());
        else
            AssertClose(expected, s.Timesteps, what + " timesteps", atol: 1e-3, rtol: 0);
    }

    [Theory]
    [MemberData(nameof(LoopSetups))]
    public void TenStepLoopWithGenerator301(string setup)
    {
        using var golden = TensorFile.Open(Fixture(File));
        using var generator = new Generator(301);
        RunLoop(golden, setup, generator);
    }

    [Theory]
    [InlineData("DPMSolverSDE_karras")]
    [InlineData("DPMSolverSDE_karras_v")]
    public void SdeLoopWithTheRecordedNoiseAndItsSeed(string setup)
    {
        using var golden = TensorFile.Open(Fixture(File));
        using var recorded = golden.ReadTensor($"{setup}/loop/step_noise");
        // 10 intervals, the last one an Euler step to σ = 0: 9 × 2 stages draw noise.
        Assert.Equal(18, recorded.Size(0));
        using (var g = new Generator(301))
        {
            for (var i = 0; i < recorded.Size(0); i++)
            {
                using var z = torch.Randn([1, 4, 8, 8], g);
                using var e = recorded.Narrow(0, i, 1).Squeeze(0);
                Assert.Equal(e.ToArray<float>(), z.ToArray<float>());
            }
        }
        var draws = Enumerable.Range(0, (int)recorded.Size(0)).Select(i => recorded.Narrow(0, i, 1).Squeeze(0)).ToArray();
        try
        {
            RunLoop(golden, setup, NoiseSource.FromTensors(draws));
        }
        finally
        {
            foreach (var d in draws) d.Dispose();
        }
    }

    private static void RunLoop(TensorFile golden, string setup, NoiseSource noise)
    {
        using var scheduler = Build(setup);
        scheduler.SetTimesteps(10);
        using var modelInputs = golden.ReadTensor($"{setup}/loop/model_input");
        using var prevSamples = golden.ReadTensor($"{setup}/loop/prev_sample");
        using var preds = golden.ReadTensor($"{setup}/loop/pred_original_sample", optional: true);
        Assert.Equal(modelInputs.Size(0), scheduler.TimestepValues.Count);
        var x = golden.ReadTensor($"{setup}/loop/x_init");
        try
        {
            for (var k = 0; k < scheduler.TimestepValues.Count; k++)
            {
                using var scope = torch.NewDisposeScope();
                var t = scheduler.TimestepValues[k];
                var modelInput = scheduler.ScaleModelInput(x, t);
                AssertClose(modelInputs.Narrow(0, k, 1).Squeeze(0), modelInput, $"{setup} step {k} model_input");
                var output = scheduler.Step(ToyModel(modelInput, t), t, x, noise);
                AssertClose(prevSamples.Narrow(0, k, 1).Squeeze(0), output.PrevSample, $"{setup} step {k} prev_sample");
                if (preds is not null)
                    AssertClose(preds.Narrow(0, k, 1).Squeeze(0), output.PredOriginalSample!, $"{setup} step {k} pred_original_sample");
                x.Dispose();
                x = output.PrevSample.DetachFromDisposeScope();
            }
        }
        finally
        {
            x.Dispose();
        }
    }
}

internal static class TensorFileExtensions
{
    public static Tensor? ReadTensor(this TensorFile reader, string name, bool optional) =>
        optional && !reader.Contains(name) ? null : reader.ReadTensor(name);
}
