using SdAppliance.Appliance.Generation;
using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Web.A1111;

namespace SdAppliance.Web.Tests.A1111;

/// <summary>How A1111 sampler names and schedule types become the registry's sampler.</summary>
public sealed class SamplerNameTests
{
    [Theory]
    [InlineData("DPM++ 2M Karras", null, "DPM++ 2M Karras")]
    [InlineData("DPM++ 2M Karras", "", "DPM++ 2M Karras")]
    [InlineData("DPM++ 2M Karras", "automatic", "DPM++ 2M Karras")]  // A1111 1.10 would drop the suffix here
    [InlineData("DPM++ 2M Karras", "Automatic", "DPM++ 2M Karras")]
    [InlineData("DPM++ 2M", "karras", "DPM++ 2M Karras")]
    [InlineData("DPM++ 2M", "Karras", "DPM++ 2M Karras")]
    [InlineData("DPM++ 2M Karras", "normal", "DPM++ 2M")]  // an explicit schedule type wins over the suffix
    [InlineData("dpmpp_sde", "KARRAS", "DPM++ SDE Karras")]
    [InlineData("Euler a", "normal", "Euler a")]
    [InlineData("k_lms", null, "LMS")]
    [InlineData("LCM", null, "LCM")]  // A1111 1.7+'s sampler for LCM models and the LCM-LoRA
    [InlineData("lcm", "automatic", "LCM")]
    public void Names_and_schedule_types_resolve(string sampler, string? scheduler, string expected) =>
        Assert.Equal(new ResolvedSampler(expected, null), SamplerNames.Resolve(sampler, scheduler));

    [Theory]
    [InlineData("Euler a", "SGM Uniform", "Euler a")]
    [InlineData("Euler a", "sgm_uniform", "Euler a")]
    [InlineData("Euler", "SGMUniform", "Euler")]  // A1111's alias
    [InlineData("DPM++ 2M Karras", "SGM Uniform", "DPM++ 2M")]  // an explicit schedule type wins over the suffix
    public void Sgm_uniform_runs_trailing_timesteps(string sampler, string scheduler, string expected) =>
        Assert.Equal(new ResolvedSampler(expected, "trailing"), SamplerNames.Resolve(sampler, scheduler));

    [Fact]
    public void Trailing_spacing_is_sgm_uniform_and_the_models_own_spacing_has_no_schedule_type()
    {
        Assert.Equal("sgm_uniform", SamplerNames.ScheduleTypeFor("trailing"));
        Assert.Null(SamplerNames.ScheduleTypeFor(null));
        Assert.Null(SamplerNames.ScheduleTypeFor("leading"));
    }

    [Theory]
    [InlineData("Euler", "karras", "scheduler")]
    [InlineData("DPM++ 2M", "exponential", "scheduler")]
    [InlineData("Heun++", null, "sampler")]
    public void What_cannot_run_is_refused_naming_the_field(string sampler, string? scheduler, string field) =>
        Assert.Equal(field, Assert.Throws<GenerationRequestException>(() => SamplerNames.Resolve(sampler, scheduler)).Field);

    [Fact]
    public void Sampler_name_wins_over_sampler_index_and_sampler_index_is_a_name_too()
    {
        Assert.Equal("DPM++ 2M Karras", A1111Generation.ToJobRequest(new A1111GenerationRequest { SamplerName = "DPM++ 2M Karras", SamplerIndex = "Euler a" }).Sampler);
        Assert.Equal("DPM++ 2M Karras", A1111Generation.ToJobRequest(new A1111GenerationRequest { SamplerIndex = "DPM++ 2M Karras" }).Sampler);
        Assert.Null(A1111Generation.ToJobRequest(new A1111GenerationRequest()).Sampler);
    }

    [Fact]
    public void Left_out_fields_take_A1111s_defaults()
    {
        var request = A1111Generation.ToJobRequest(new A1111GenerationRequest());
        Assert.Equal((512, 512, -1L, 1, 1), (request.Width!.Value, request.Height!.Value, request.Seed, request.BatchSize, request.NIter));
        // The sampler, steps and CFG scale are the model's: A1111's for an ordinary model, a Turbo or LCM model's own.
        Assert.Equal((null, null, null), (request.Sampler, request.Steps, request.CfgScale));
        Assert.Equal(("Euler", 50, 7.0, (string?)null), (A1111Generation.OrdinaryDefaults.Sampler, A1111Generation.OrdinaryDefaults.Steps,
            A1111Generation.OrdinaryDefaults.CfgScale, A1111Generation.OrdinaryDefaults.TimestepSpacing));
    }
}
