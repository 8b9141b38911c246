using static SdAppliance.Cli.Tests.GenerateCommandTests;

namespace SdAppliance.Cli.Tests;

/// <summary>
/// <c>sdapp generate</c> on the tiny SDXL fixture, with the arguments of the fixtures README's SDXL pipeline runs
/// (64x64; an empty negative prompt is diffusers' None, the zeros of force_zeros_for_empty_prompt).
/// </summary>
public sealed class SdxlGenerateCommandTests : IDisposable
{
    private static readonly string TinySdxl = Path.Combine(Fixtures, "tiny-sdxl");

    private readonly string temp = Directory.CreateTempSubdirectory("sdapp-generate-sdxl-").FullName;

    public void Dispose() => Directory.Delete(temp, recursive: true);

    [Theory]
    [InlineData("x1_euler", "a red fox sitting in fresh snow", "", "42", "Euler", "10", "5")]
    [InlineData("x2_dpmpp_karras_neg", "a lighthouse on a rocky coast at dusk", "blurry, low contrast", "1234", "DPM++ 2M Karras", "9", "7")]
    public void ReproducesTheReferenceRun(string id, string prompt, string negative, string seed, string sampler, string steps, string cfg)
    {
        var png = Path.Combine(temp, id + ".png");
        var (exit, _, error) = Invoke(["generate", "--model", TinySdxl, "--prompt", prompt, "--negative-prompt", negative, "--seed", seed,
            "--sampler", sampler, "--steps", steps, "--cfg", cfg, "--width", "64", "--height", "64", "--output", png]);

        Assert.True(exit == 0, error);
        AssertLooksLike(Path.Combine(Fixtures, "sdxl", "pipelines", id + ".png"), png);
        var parameters = ParametersOf(png);
        Assert.Equal(prompt, parameters.Prompt);
        Assert.Equal(sampler, parameters["Sampler"]);
        Assert.Equal("tiny-sdxl", parameters["Model"]);
    }

    [Fact]
    public void ReproducesTheMicroConditionedRunAndRecordsItsConditioning()
    {
        var png = Path.Combine(temp, "x3.png");
        var (exit, _, error) = Invoke(["generate", "--model", TinySdxl, "--prompt", "a bowl of lemons on a wooden table", "--seed", "7", "--sampler", "Euler",
            "--steps", "10", "--cfg", "5", "--width", "64", "--height", "64",
            "--original-size", "1024,768", "--crops-coords-top-left", "64,32", "--target-size", "768,1024", "--output", png]);

        Assert.True(exit == 0, error);
        AssertLooksLike(Path.Combine(Fixtures, "sdxl", "pipelines", "x3_euler_microcond.png"), png);
        var parameters = ParametersOf(png);
        Assert.Equal(("768x1024", "64", "32", "1024x768"), (parameters["Original size"], parameters["Crop top"], parameters["Crop left"], parameters["Target size"]));
    }

    [Fact]
    public void MicroConditioningForAModelThatIsNotSdxlIsRefused()
    {
        var (exit, _, error) = Invoke(["generate", "--model", TinyFolder, "--prompt", "x", "--steps", "1", "--target-size", "64,64", "--output", Path.Combine(temp, "x.png")]);

        Assert.Equal(1, exit);
        Assert.StartsWith("error: --target-size: is SDXL micro-conditioning, and tiny-sd is not an SDXL model", error);
        Assert.False(File.Exists(Path.Combine(temp, "x.png")));
    }

    [Fact]
    public void AMicroConditioningValueThatIsNotTwoNumbersIsRefusedInTheFlagsWords()
    {
        var (exit, _, error) = Invoke(["generate", "--model", TinySdxl, "--prompt", "x", "--original-size", "1024,x", "--output", Path.Combine(temp, "x.png")]);

        Assert.Equal(1, exit);
        Assert.StartsWith("error: --original-size: '1024,x': expected HEIGHT,WIDTH", error);
    }
}
