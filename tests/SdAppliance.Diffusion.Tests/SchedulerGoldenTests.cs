using System.Text.Json;
using SdAppliance.Diffusion.Schedulers;
using SdAppliance.Formats;
using SdAppliance.Torch;
using SdAppliance.Torch.Serialization;
using static SdAppliance.Diffusion.Tests.SchedulerTestSupport;

namespace SdAppliance.Diffusion.Tests;

/// <summary>
/// The reference traces of tests/fixtures/schedulers_golden.safetensors (diffusers on PyTorch
/// 1.13, the SD 1.5 scheduler config as base; recipe in tests/fixtures/README.md and the shared
/// fixtures README, "Schedulers").
/// </summary>
public class SchedulerGoldenTests
{
    public static TheoryData<string> Setups => new(SetupNames);

    public static TheoryData<string, int> SetupsAndSteps
    {
        get
        {
            var data = new TheoryData<string, int>();
            foreach (var s in SetupNames) { data.Add(s, 10); data.Add(s, 25); }
            return data;
        }
    }

    [Theory]
    [MemberData(nameof(SetupsAndSteps))]
    public void TimestepsAreExactAndSigmasMatch(string setup, int steps)
    {
        using var golden = TensorFile.Open(Fixture(GoldenFile));
        using var scheduler = Build(setup);
        scheduler.SetTimesteps(steps);
        var expected = Setup(setup).GetProperty($"n{steps}");

        using var expectedTimesteps = golden.ReadTensor($"{setup}/n{steps}/timesteps");
        Assert.Equal(expectedTimesteps.DType, scheduler.Timesteps.DType);
        Assert.Equal(expected.GetProperty("timesteps_dtype").GetString(), expectedTimesteps.DType == DType.Int64 ? "int64" : "float32");
        Assert.Equal(expectedTimesteps.ToBytes(), scheduler.Timesteps.ToBytes()); // exact, as the README asks

        Assert.Equal(expected.GetProperty("init_noise_sigma").GetDouble(), scheduler.InitNoiseSigma);
        Assert.Equal(expected.GetProperty("order").GetInt32(), scheduler.Order);

        var name = $"{setup}/n{steps}/sigmas";
        if (golden.Contains(name))
        {
            using var expectedSigmas = golden.ReadTensor(name);
            Assert.NotNull(scheduler.Sigmas);
            AssertClose(expectedSigmas, scheduler.Sigmas!, name);
        }
        else
        {
            Assert.Equal(JsonValueKind.Null, expected.GetProperty("sigmas").ValueKind);
        }
    }

    /// <summary>
    /// Every setting of the reference's resolved config (given keys plus the class's defaults,
    /// unknown keys kept) comes out of our resolution.
    /// </summary>
    [Theory]
    [MemberData(nameof(Setups))]
    public void ResolvedConfigEqualsTheReferences(string setup)
    {
        using var scheduler = Build(setup);
        var config = Setup(setup).GetProperty("config");
        var expectedJson = new Dictionary<string, JsonElement>();
        foreach (var p in config.EnumerateObject())
            if (p.Name != "_use_default_values") expectedJson[p.Name] = p.Value;
        var expected = SchedulerConfig.FromJson(JsonSerializer.Serialize(expectedJson, SchedulerConfigJson));
        Assert.Equal(expected.ToJson(), scheduler.Config.ToJson());
    }

    private static readonly JsonSerializerOptions SchedulerConfigJson = new()
    {
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    [Theory]
    [MemberData(nameof(Setups))]
    public void TenStepLoopMatchesWithTheRecordedNoise(string setup)
    {
        using var golden = TensorFile.Open(Fixture(GoldenFile));
        var noiseName = $"{setup}/loop/step_noise";
        NoiseSource? noise = null;
        Tensor[] draws = [];
        if (golden.Contains(noiseName))
        {
            using var all = golden.ReadTensor(noiseName);
            draws = Enumerable.Range(0, (int)all.Size(0)).Select(i => all.Narrow(0, i, 1).Squeeze(0)).ToArray();
            noise = NoiseSource.FromTensors(draws);
        }
        try
        {
            RunLoop(golden, setup, noise);
        }
        finally
        {
            foreach (var d in draws) d.Dispose();
        }
    }

    /// <summary>
    /// The seed contract for the stochastic samplers: our CPU generator seeded 301 draws exactly
    /// the reference's per-step noise, so the loop driven by a real generator matches too.
    /// </summary>
    [Theory]
    [InlineData("EulerAncestralDiscreteScheduler", 10)]
    [InlineData("DDPMScheduler", 10)]
    [InlineData("LCMScheduler", 9)]
    public void Generator301DrawsTheRecordedStepNoiseAndDrivesTheLoop(string setup, int draws)
    {
        using var golden = TensorFile.Open(Fixture(GoldenFile));
        using var recorded = golden.ReadTensor($"{setup}/loop/step_noise");
        Assert.Equal(draws, recorded.Size(0));
        Assert.Equal(draws, Setup(setup).GetProperty("loop").GetProperty("noise_draws_from_generator").GetInt32());
        using (var g = new Generator(301))
        {
            for (var i = 0; i < draws; i++)
            {
                using var z = torch.Randn([1, 4, 8, 8], g);
                using var expected = recorded.Narrow(0, i, 1).Squeeze(0);
                Assert.Equal(expected.ToArray<float>(), z.ToArray<float>());
            }
        }

        using var generator = new Generator(301);
        RunLoop(golden, setup, generator);
    }

    [Fact]
    public void LoopInitialLatentsAreSeed300TimesInitNoiseSigma()
    {
        using var golden = TensorFile.Open(Fixture(GoldenFile));
        foreach (var setup in SetupNames)
        {
            using var scheduler = Build(setup);
            scheduler.SetTimesteps(10);
            using var g = new Generator(300);
            using var z = torch.Randn([1, 4, 8, 8], g);
            // The pipeline multiplies by a float32 scalar: one rounding, so exact equality.
            using var x = z * (double)(float)scheduler.InitNoiseSigma;
            using var expected = golden.ReadTensor($"{setup}/loop/x_init");
            Assert.Equal(expected.ToArray<float>(), x.ToArray<float>());
        }
    }

    private static void RunLoop(TensorFile golden, string setup, NoiseSource? noise)
    {
        using var scheduler = Build(setup);
        scheduler.SetTimesteps(10);
        using var modelInputs = golden.ReadTensor($"{setup}/loop/model_input");
        using var modelOutputs = golden.ReadTensor($"{setup}/loop/model_output");
        using var prevSamples = golden.ReadTensor($"{setup}/loop/prev_sample");
        var predName = $"{setup}/loop/pred_original_sample";
        using var preds = golden.Contains(predName) ? golden.ReadTensor(predName) : null;
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
                var modelOutput = ToyModel(modelInput, t);
                AssertClose(modelOutputs.Narrow(0, k, 1).Squeeze(0), modelOutput, $"{setup} step {k} model_output");
                var output = scheduler.Step(modelOutput, t, x, noise);
                AssertClose(prevSamples.Narrow(0, k, 1).Squeeze(0), output.PrevSample, $"{setup} step {k} prev_sample");
                if (preds is not null)
                {
                    Assert.NotNull(output.PredOriginalSample);
                    AssertClose(preds.Narrow(0, k, 1).Squeeze(0), output.PredOriginalSample!, $"{setup} step {k} pred_original_sample");
                }
                x.Dispose();
                x = output.PrevSample.DetachFromDisposeScope();
            }
        }
        finally
        {
            x.Dispose();
        }
    }

    [Fact]
    public void TrainingBetasAndAlphasCumprodAreBitExact()
    {
        using var golden = TensorFile.Open(Fixture(GoldenFile));
        using var ddpm = new DdpmScheduler(BaseConfig);
        using var betas = golden.ReadTensor("train/betas");
        using var ac = golden.ReadTensor("train/alphas_cumprod");
        Assert.Equal(betas.ToArray<float>(), ddpm.Betas.ToArray());
        Assert.Equal(ac.ToArray<float>(), ddpm.AlphasCumprod.ToArray());
    }

    [Fact]
    public void AddNoiseAndVelocityMatchTheTrainingForwardProcess()
    {
        using var golden = TensorFile.Open(Fixture(GoldenFile));
        using var scope = torch.NewDisposeScope();
        var g = new Generator(302);
        var x0 = torch.Randn([1, 4, 8, 8], g);
        var noise = torch.Randn([1, 4, 8, 8], g);
        Assert.Equal(golden.ReadTensor("train/x0").ToArray<float>(), x0.ToArray<float>());
        Assert.Equal(golden.ReadTensor("train/noise").ToArray<float>(), noise.ToArray<float>());

        var timesteps = golden.ReadTensor("train/timesteps");
        Assert.Equal([0L, 1, 10, 100, 250, 500, 750, 999], timesteps.ToArray<long>());
        using var ddpm = new DdpmScheduler(BaseConfig);
        AssertClose(golden.ReadTensor("train/noisy"), ddpm.AddNoise(x0, noise, timesteps), "add_noise");
        AssertClose(golden.ReadTensor("train/velocity"), ddpm.GetVelocity(x0, noise, timesteps), "get_velocity");

        using var euler = Build("EulerDiscreteScheduler");
        euler.SetTimesteps(10);
        var eulerTimesteps = golden.ReadTensor("train/euler_timesteps");
        Assert.Equal(new[] { euler.TimestepValues[0], euler.TimestepValues[3], euler.TimestepValues[9] },
            eulerTimesteps.ToArray<float>().Select(v => (double)v));
        AssertClose(golden.ReadTensor("train/euler_noisy"), euler.AddNoise(x0, noise, eulerTimesteps), "euler add_noise");
    }
}
