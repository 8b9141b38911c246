using SdAppliance.Diffusion.Schedulers;
using SdAppliance.Formats;
using SdAppliance.Torch;
using static SdAppliance.Diffusion.Tests.SchedulerTestSupport;

namespace SdAppliance.Diffusion.Tests;

/// <summary>
/// Timestep spacings computed by hand from diffusers' formulas, the name registry, config
/// handling, the LMS quadrature and the DPM++ SDE noise law.
/// </summary>
public class SchedulerBehaviourTests
{
    private static double[] Timesteps(string sampler, SchedulerConfig overrides, int steps)
    {
        using var s = SchedulerRegistry.Create(sampler, new SchedulerConfig { NumTrainTimesteps = 1000 }, overrides);
        s.SetTimesteps(steps);
        return [.. s.TimestepValues];
    }

    // leading: (n−1−i)·⌊N/n⌋ + offset; trailing: round(N − i·N/n) − 1; linspace: round(linspace(0, N−1, n)) reversed.
    [Theory]
    [InlineData("leading", 0, new double[] { 900, 800, 700, 600, 500, 400, 300, 200, 100, 0 })]
    [InlineData("leading", 1, new double[] { 901, 801, 701, 601, 501, 401, 301, 201, 101, 1 })]
    [InlineData("trailing", 0, new double[] { 999, 899, 799, 699, 599, 499, 399, 299, 199, 99 })]
    [InlineData("linspace", 0, new double[] { 999, 888, 777, 666, 555, 444, 333, 222, 111, 0 })]
    public void DdimAndDdpmSpacingsForTenSteps(string spacing, int offset, double[] expected)
    {
        var o = new SchedulerConfig { TimestepSpacing = spacing, StepsOffset = offset };
        Assert.Equal(expected, Timesteps("ddim", o, 10));
        Assert.Equal(expected, Timesteps("ddpm", o, 10));
        Assert.Equal(expected, Timesteps("euler", o, 10)); // float32, but these are integers
    }

    [Fact]
    public void ThreeStepsShowRoundingAndFractionalSpacing()
    {
        // trailing: 1000, 666.67, 333.33 → 1000, 667, 333 → −1.
        Assert.Equal([999.0, 666, 332], Timesteps("ddim", new() { TimestepSpacing = "trailing" }, 3));
        // linspace(0, 999, 3) = 0, 499.5, 999: DDIM rounds half to even (500); Euler keeps 499.5.
        Assert.Equal([999.0, 500, 0], Timesteps("ddim", new() { TimestepSpacing = "linspace" }, 3));
        Assert.Equal([999.0, 499.5, 0], Timesteps("euler", new() { TimestepSpacing = "linspace" }, 3));
    }

    [Fact]
    public void MultistepSolversSpaceNPlusOnePointsAndDropTheLast()
    {
        // leading: ⌊1000/5⌋ = 200 → 800, 600, 400, 200 (+1); linspace(0, 999, 5) = 0, 249.75,
        // 499.5, 749.25, 999 → rounded half to even 0, 250, 500, 749, 999; trailing: 1000 − 250i − 1.
        foreach (var sampler in new[] { "dpmpp_2m", "unipc" })
        {
            Assert.Equal([801.0, 601, 401, 201], Timesteps(sampler, new() { TimestepSpacing = "leading", StepsOffset = 1 }, 4));
            Assert.Equal([999.0, 749, 500, 250], Timesteps(sampler, new() { TimestepSpacing = "linspace" }, 4));
            Assert.Equal([999.0, 749, 499, 249], Timesteps(sampler, new() { TimestepSpacing = "trailing" }, 4));
        }
    }

    [Fact]
    public void PndmRepeatsTheSecondTimestepOrWarmsUpWithRungeKutta()
    {
        // skip_prk: grid 1, 251, 501, 751 → 751, 501, 501, 251, 1.
        Assert.Equal([751.0, 501, 501, 251, 1], Timesteps("plms", new() { StepsOffset = 1, TimestepSpacing = "leading" }, 4));
        // PRK: the last four grid points and their half-stride midpoints, each inner one twice,
        // then the remaining grid descending.
        Assert.Equal(
            [900.0, 850, 850, 800, 800, 750, 750, 700, 700, 650, 650, 600, 600, 500, 400, 300, 200, 100, 0],
            Timesteps("pndm", new() { SkipPrkSteps = false, TimestepSpacing = "leading" }, 10));
    }

    [Fact]
    public void LcmPicksFromTheDistillationGrid()
    {
        // k = 1000/50 = 20: grid 999, 979, …, 19; indices ⌊0, 12.5, 25, 37.5⌋ = 0, 12, 25, 37.
        Assert.Equal([999.0, 759, 499, 259], Timesteps("lcm", new(), 4));
    }

    [Fact]
    public void TrailingSpacingNeverYieldsNegativeTimesteps()
    {
        // NumPy's arange length rule gives 62 points for 1000/61; diffusers would end on t = −1.
        var ts = Timesteps("ddim", new() { TimestepSpacing = "trailing" }, 61);
        Assert.Equal(61, ts.Length);
        Assert.Equal(999, ts[0]);
        Assert.True(ts[^1] >= 0);
    }

    [Fact]
    public void InitNoiseSigmaDependsOnSpacingForSigmaSamplers()
    {
        using var leading = SchedulerRegistry.Create("euler", BaseConfig);
        using var linspace = SchedulerRegistry.Create("euler", BaseConfig, new() { TimestepSpacing = "linspace" });
        leading.SetTimesteps(10);
        linspace.SetTimesteps(10);
        var maxLeading = leading.Sigmas!.ToArray<float>().Max();
        var maxLinspace = linspace.Sigmas!.ToArray<float>().Max();
        Assert.Equal(MathF.Sqrt(maxLeading * maxLeading + 1), leading.InitNoiseSigma);
        Assert.Equal(maxLinspace, linspace.InitNoiseSigma);
        using var dpm = SchedulerRegistry.Create("dpmpp_2m", BaseConfig);
        Assert.Equal(1.0, dpm.InitNoiseSigma);
    }

    [Fact]
    public void KarrasSigmasFollowTheRho7Ramp()
    {
        using var s = SchedulerRegistry.Create("dpmpp_2m_karras", BaseConfig);
        s.SetTimesteps(5);
        var sigmas = s.Sigmas!.ToArray<float>();
        double max = sigmas[0], min = sigmas[^2];
        // σ_i = (σmax^(1/7) + i/(n−1)·(σmin^(1/7) − σmax^(1/7)))^7, ending with 0.
        for (var i = 0; i < 5; i++)
        {
            var expected = Math.Pow(Math.Pow(max, 1 / 7.0) + i / 4.0 * (Math.Pow(min, 1 / 7.0) - Math.Pow(max, 1 / 7.0)), 7);
            Assert.Equal(expected, sigmas[i], expected * 1e-6);
        }
        Assert.Equal(0f, sigmas[^1]);
        // The ends are the training table's: σ(999) and σ(0) of the SD schedule.
        var ac = s.AlphasCumprod;
        Assert.Equal(Math.Sqrt((1 - ac[999]) / ac[999]), max, 1e-5);
        Assert.Equal(Math.Sqrt((1 - ac[0]) / ac[0]), min, 1e-7);
    }

    // ---- registry ----

    [Theory]
    [InlineData("ddim", typeof(DdimScheduler))]
    [InlineData("DDIM", typeof(DdimScheduler))]
    [InlineData("PLMS", typeof(PndmScheduler))]
    [InlineData("pndm", typeof(PndmScheduler))]
    [InlineData("Euler", typeof(EulerDiscreteScheduler))]
    [InlineData("k_euler", typeof(EulerDiscreteScheduler))]
    [InlineData("Euler a", typeof(EulerAncestralDiscreteScheduler))]
    [InlineData("K_EULER_A", typeof(EulerAncestralDiscreteScheduler))]
    [InlineData("DPM++ 2M", typeof(DpmSolverMultistepScheduler))]
    [InlineData("dpm++ 2m karras", typeof(DpmSolverMultistepScheduler))]
    [InlineData("dpmpp_2m_karras", typeof(DpmSolverMultistepScheduler))]
    [InlineData("DPM++ SDE Karras", typeof(DpmSolverSdeScheduler))]
    [InlineData("dpmpp_sde_karras", typeof(DpmSolverSdeScheduler))]
    [InlineData("LMS", typeof(LmsDiscreteScheduler))]
    [InlineData("k_lms", typeof(LmsDiscreteScheduler))]
    [InlineData("UniPC", typeof(UniPCMultistepScheduler))]
    [InlineData("LCM", typeof(LcmScheduler))]
    [InlineData("ddpm", typeof(DdpmScheduler))]
    [InlineData("  Euler a ", typeof(EulerAncestralDiscreteScheduler))]
    [InlineData("EulerDiscreteScheduler", typeof(EulerDiscreteScheduler))]
    public void NamesResolveCaseInsensitively(string name, Type type)
    {
        using var s = SchedulerRegistry.Create(name, BaseConfig);
        Assert.IsType(type, s);
    }

    [Fact]
    public void SamplerNamesAddTheirDefiningSettingsOnTheModelConfig()
    {
        using var karras = SchedulerRegistry.Create("DPM++ 2M Karras", BaseConfig);
        using var plain = SchedulerRegistry.Create("DPM++ 2M", BaseConfig with { UseKarrasSigmas = true });
        using var plms = SchedulerRegistry.Create("PLMS", BaseConfig with { SkipPrkSteps = false });
        Assert.True(karras.Config.UseKarrasSigmas);
        Assert.Equal("dpmsolver++", karras.Config.AlgorithmType);
        Assert.Equal(2, karras.Config.SolverOrder);
        Assert.False(plain.Config.UseKarrasSigmas); // the name decides
        Assert.True(plms.Config.SkipPrkSteps);
        // Betas, spacing and offset come from the model's config, the class name from the sampler.
        Assert.Equal("scaled_linear", karras.Config.BetaSchedule);
        Assert.Equal("leading", karras.Config.TimestepSpacing);
        Assert.Equal(1, karras.Config.StepsOffset);
        Assert.Equal("DPMSolverMultistepScheduler", karras.Config.ClassName);
        // Explicit overrides win over both.
        using var overridden = SchedulerRegistry.Create("dpmpp_2m_karras", BaseConfig, new() { UseKarrasSigmas = false, PredictionType = "v_prediction" });
        Assert.False(overridden.Config.UseKarrasSigmas);
        Assert.Equal("v_prediction", overridden.PredictionType);
    }

    [Fact]
    public void UnknownSamplerListsTheValidNames()
    {
        var e = Assert.Throws<UserInputException>(() => SchedulerRegistry.Create("DPM++ 3M Turbo", BaseConfig));
        Assert.Contains("DPM++ 3M Turbo", e.Message);
        foreach (var s in SchedulerRegistry.Samplers)
        {
            Assert.Contains(s.Id, e.Message);
            Assert.Contains(s.DisplayName, e.Message);
        }
        Assert.Contains("k_euler_a", e.Message);
    }

    [Fact]
    public void TheModelsOwnSchedulerComesFromItsClassName()
    {
        using var s = SchedulerRegistry.FromConfig(BaseConfig);
        Assert.IsType<PndmScheduler>(s);
        Assert.Throws<NotSupportedException>(() => SchedulerRegistry.FromConfig(BaseConfig with { ClassName = "KDPM2DiscreteScheduler" }));
    }

    // ---- config ----

    [Fact]
    public void ConfigJsonRoundTripsPythonInfinityAndUnknownKeys()
    {
        const string json = """
            {"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity, "beta_start": 0.00085,
             "trained_betas": null, "some_future_key": [1, 2], "disable_corrector": [0, 2]}
            """;
        var c = SchedulerConfig.FromJson(json);
        Assert.Equal(double.NegativeInfinity, c.LambdaMinClipped);
        Assert.Equal(0.00085, c.BetaStart);
        Assert.Null(c.TrainedBetas);
        Assert.Equal([0, 2], c.DisableCorrector!);
        Assert.Equal("[1,2]", c.GetExtra("some_future_key")!.Value.GetRawText().Replace(" ", "", StringComparison.Ordinal));
        var written = c.ToJson();
        Assert.Contains("\"lambda_min_clipped\": -Infinity", written); // as Python writes it
        Assert.Contains("some_future_key", written);
        Assert.Equal(written, SchedulerConfig.FromJson(written).ToJson());
    }

    [Fact]
    public void WithReplacesOnlyTheGivenKeys()
    {
        var merged = BaseConfig.With(new SchedulerConfig { PredictionType = "v_prediction", UseKarrasSigmas = true });
        Assert.Equal("v_prediction", merged.PredictionType);
        Assert.True(merged.UseKarrasSigmas);
        Assert.Equal(BaseConfig.BetaEnd, merged.BetaEnd);
        Assert.Equal(BaseConfig.SkipPrkSteps, merged.SkipPrkSteps);
    }

    [Fact]
    public void ClassDefaultsFillWhatTheConfigLeavesOut()
    {
        // An empty config takes each class's own defaults, which differ (diffusers' from_config).
        using var ddim = new DdimScheduler();
        using var euler = new EulerDiscreteScheduler();
        using var sde = new DpmSolverSdeScheduler();
        Assert.Equal("leading", ddim.Config.TimestepSpacing);
        Assert.True(ddim.Config.SetAlphaToOne);
        Assert.Equal("linspace", euler.Config.TimestepSpacing);
        Assert.Equal(0.00085, sde.Config.BetaStart);
        Assert.Equal(0.0001, euler.Config.BetaStart);
    }

    [Fact]
    public void SquaredCosineAndTrainedBetas()
    {
        using var cosine = new DdpmScheduler(new() { BetaSchedule = "squaredcos_cap_v2", NumTrainTimesteps = 1000 });
        static double AlphaBar(double t) => Math.Pow(Math.Cos((t + 0.008) / 1.008 * Math.PI / 2), 2);
        Assert.Equal((float)(1 - AlphaBar(1 / 1000.0) / AlphaBar(0)), cosine.Betas[0]);
        Assert.Equal(0.999f, cosine.Betas[999]); // capped
        var trained = Enumerable.Range(0, 10).Select(i => 0.001 * (i + 1)).ToArray();
        using var custom = new DdimScheduler(new() { NumTrainTimesteps = 10, TrainedBetas = trained });
        Assert.Equal(trained.Select(b => (float)b), custom.Betas);
        Assert.Throws<ArgumentException>(() => new DdimScheduler(new() { NumTrainTimesteps = 11, TrainedBetas = trained }));
    }

    [Fact]
    public void ZeroSnrRescaleEndsAtPureNoise()
    {
        using var s = new DdimScheduler(BaseConfig with { RescaleBetasZeroSnr = true });
        using var original = new DdimScheduler(BaseConfig);
        Assert.Equal(0f, s.AlphasCumprod[^1]); // terminal SNR zero
        // The rescale shifts and stretches √ᾱ so that its first value stays (to float32 rounding).
        Assert.Equal(original.AlphasCumprod[0], s.AlphasCumprod[0], 1e-6);
        using var euler = new EulerDiscreteScheduler(BaseConfig with { RescaleBetasZeroSnr = true });
        Assert.Equal(MathF.Pow(2, -24), euler.AlphasCumprod[^1]); // kept finite for σ
    }

    // ---- LMS quadrature ----

    [Fact]
    public void GaussLegendreIsExactForPolynomialsUpToDegree2nMinus1()
    {
        for (var degree = 0; degree <= 15; degree++)
        {
            var d = degree;
            var integral = Quadrature.GaussLegendre(x => Math.Pow(x, d), 0.5, 2.0, points: 8);
            var exact = (Math.Pow(2.0, d + 1) - Math.Pow(0.5, d + 1)) / (d + 1);
            Assert.Equal(exact, integral, Math.Abs(exact) * 1e-13);
        }
        // Reversed limits give the negated integral, as scipy's quad does for σ decreasing.
        Assert.Equal(-Quadrature.GaussLegendre(Math.Exp, 0, 1), Quadrature.GaussLegendre(Math.Exp, 1, 0), 1e-15);
        Assert.Equal(Math.E - 1, Quadrature.GaussLegendre(Math.Exp, 0, 1), 1e-14);
    }

    [Fact]
    public void LmsCoefficientsSumToTheStepAndIntegrateTheLagrangeBasis()
    {
        using var s = new LmsDiscreteScheduler(BaseConfig);
        s.SetTimesteps(10);
        var sig = s.Sigmas!.ToArray<float>().Select(v => (double)v).ToArray();
        for (var t = 0; t < 10; t++)
        {
            var order = Math.Min(t + 1, 4);
            // The Lagrange basis sums to 1, so the coefficients sum to ∫ 1 = σ_{t+1} − σ_t.
            var sum = Enumerable.Range(0, order).Sum(j => s.LmsCoefficient(order, t, j));
            Assert.Equal(sig[t + 1] - sig[t], sum, 1e-12);
        }
        // Order 2, closed form: ∫ (τ − σ_{t−1})/(σ_t − σ_{t−1}) dτ over [σ_t, σ_{t+1}].
        var (a, b, p) = (sig[3], sig[4], sig[2]);
        var expected = ((b - p) * (b - p) - (a - p) * (a - p)) / 2 / (a - p);
        Assert.Equal(expected, s.LmsCoefficient(2, 3, 0), 1e-12);
    }

    // ---- DPM++ SDE noise ----

    /// <summary>
    /// With x₀ = 0 and a perfect denoiser, an SDE interval is x ↦ (σ_d/σ)·x + σ_u·n, k-diffusion's
    /// ancestral step with (σ_d, σ_u) from (σ, σ_next). Replaying z₁ = 1, z₂ = 0 exposes the noise
    /// n of the second stage: √(L₁/(L₁+L₂)) for the Brownian law, 0 for independent draws.
    /// </summary>
    [Theory]
    [InlineData("brownian")]
    [InlineData("independent")]
    public void SdeSecondStageNoiseFollowsTheBrownianIncrement(string sampler)
    {
        using var s = SchedulerRegistry.Create("dpmpp_sde_karras", BaseConfig, new() { NoiseSampler = sampler });
        s.SetTimesteps(4);
        using var scope = torch.NewDisposeScope();
        var sig = s.Sigmas!.ToArray<float>();
        double sigma = sig[0], sigmaNext = sig[1];
        var x = torch.Full([1, 1, 2, 2], 3.0, DType.Float64);
        var noise = NoiseSource.FromTensors([torch.Ones([1, 1, 2, 2], DType.Float64), torch.Zeros([1, 1, 2, 2], DType.Float64)]);

        // Stage 1 (ε = x/σ means x̂₀ = 0), then stage 2 at the midpoint with the stage-2 ε of its input.
        var first = s.Step(x / sigma, s.TimestepValues[0], x, noise).PrevSample;
        var sigmaMid = Math.Sqrt(sigma * sigmaNext);
        var second = s.Step(first / sigmaMid, s.TimestepValues[1], first, noise).PrevSample;

        var sigmaUp = Math.Min(sigmaNext, Math.Sqrt(sigmaNext * sigmaNext * (sigma * sigma - sigmaNext * sigmaNext) / (sigma * sigma)));
        var sigmaDown = Math.Sqrt(sigmaNext * sigmaNext - sigmaUp * sigmaUp);
        var l1 = sigma - sigmaMid;
        var l2 = sigmaMid - sigmaNext;
        var n = sampler == "brownian" ? Math.Sqrt(l1 / (l1 + l2)) : 0.0;
        var expected = sigmaDown / sigma * 3.0 + sigmaUp * n;
        Assert.All(second.ToArray<double>(), v => Assert.Equal(expected, v, 1e-12));
        Assert.Equal(2, s.Order);
        Assert.Equal(2 * 4 - 1, s.TimestepValues.Count);
    }

    // ---- misuse ----

    [Fact]
    public void StepBeforeSetTimestepsAndUnknownTimestepsAreErrors()
    {
        using var euler = SchedulerRegistry.Create("euler", BaseConfig);
        using var x = torch.Zeros([1, 4, 2, 2]);
        Assert.Throws<InvalidOperationException>(() => euler.Step(x, 901, x));
        euler.SetTimesteps(10);
        Assert.Throws<ArgumentException>(() => euler.Step(x, 900, x));
        Assert.Throws<NotSupportedException>(() => SchedulerRegistry.Create("euler_a", BaseConfig, new() { PredictionType = "sample" }));
    }

    [Fact]
    public void BatchesTakeOneGeneratorPerImage()
    {
        // As diffusers' list of generators: image i's noise is what generator i alone would draw.
        using var g0 = new Generator(5);
        using var g1 = new Generator(6);
        using var both = NoiseSource.FromGenerators([g0, g1]).Randn([2, 4, 2, 2], DType.Float32, Device.Cpu);
        using var r0 = new Generator(5);
        using var r1 = new Generator(6);
        using var a = torch.Randn([1, 4, 2, 2], r0);
        using var b = torch.Randn([1, 4, 2, 2], r1);
        using var expected = torch.Cat([a, b]);
        Assert.Equal(expected.ToArray<float>(), both.ToArray<float>());
    }
}
