using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Diffusion.Schedulers;

namespace SdAppliance.Diffusion.Tests;

/// <summary>The request's rules, without a model: each refusal names the field as a JSON request spells it.</summary>
public sealed class GenerationRequestTests
{
    public static TheoryData<GenerationRequest, string, string> Refusals => new()
    {
        { new() { Steps = 0 }, "steps", "must be at least 1, got 0" },
        { new() { CfgScale = double.NaN }, "cfg_scale", "must be a finite number, got NaN" },
        { new() { CfgScale = double.PositiveInfinity }, "cfg_scale", "must be a finite number" },
        { new() { BatchSize = 0 }, "batch_size", "must be at least 1, got 0" },
        { new() { ClipSkip = 0 }, "clip_skip", "counts from 1" },
        { new() { Width = 65 }, "width", "multiple of 8" },
        { new() { Height = -8 }, "height", "multiple of 8" },
        { new() { Strength = 0 }, "strength", "must be in (0, 1], got 0" },
        { new() { Strength = double.NaN }, "strength", "must be in (0, 1]" },
        { new() { Sampler = "Euler b" }, "sampler", "unknown sampler 'Euler b'" },
        // img2img runs int(steps × strength) steps: none here (it used to fail deep in the pipeline with an index error).
        { new() { InitImage = new SdAppliance.Imaging.RgbImage(8, 8, 3), Steps = 1, Strength = 0.75 }, "strength", "with 1 steps a strength of 0.75 runs no step" },
        { new() { Loras = [("no-such-lora.safetensors", 0.5)] }, "loras", "the file 'no-such-lora.safetensors' does not exist" },
    };

    [Theory]
    [MemberData(nameof(Refusals))]
    public void ARequestNoModelCanGenerateIsRefusedNamingTheField(GenerationRequest request, string field, string problem)
    {
        var e = Assert.Throws<GenerationRequestException>(request.Validate);

        Assert.Equal(field, e.Field);
        Assert.Contains(problem, e.Problem);
        Assert.StartsWith(field + ": ", e.Message);
    }

    [Fact]
    public void TheDefaultsAndEverySamplerNameAreValid()
    {
        new GenerationRequest { InitImage = new SdAppliance.Imaging.RgbImage(8, 8, 3), Steps = 2, Strength = 0.5 }.Validate();  // one step
        new GenerationRequest().Validate();
        foreach (var name in SchedulerRegistry.Samplers.SelectMany(s => s.Names).Concat(SchedulerRegistry.ClassNames))
            new GenerationRequest { Sampler = name.ToUpperInvariant() }.Validate();  // any case
    }

    [Fact]
    public void TheUnknownSamplerTextIsTheRegistrysOwn()
    {
        // One text: the request's refusal and the registry's are the same words, listing ids, A1111 names and classes.
        var fromRequest = Assert.Throws<GenerationRequestException>(new GenerationRequest { Sampler = "fastest" }.Validate);
        var fromRegistry = Assert.Throws<Formats.UserInputException>(() => SchedulerRegistry.Find("fastest"));

        Assert.Equal(fromRegistry.Message, fromRequest.Message);
        foreach (var expected in new[] { "dpmpp_2m_karras", "\"DPM++ 2M Karras\"", "k_euler_a", "UniPCMultistepScheduler" })
            Assert.Contains(expected, fromRequest.Message);
    }
}
