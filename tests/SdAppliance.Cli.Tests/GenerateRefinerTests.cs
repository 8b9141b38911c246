using SdAppliance.Diffusion.Tests;

namespace SdAppliance.Cli.Tests;

/// <summary><c>sdapp generate --refiner PATH --refiner-switch-at F</c>: tiny-sdxl hands off to a tiny refiner; the PNG info says so.</summary>
public sealed class GenerateRefinerTests : IDisposable
{
    private static readonly string TinySdxl = Path.Combine(GenerateCommandTests.Fixtures, "tiny-sdxl");
    private readonly string temp = Directory.CreateTempSubdirectory("sdapp-generate-refiner-").FullName;

    public GenerateRefinerTests() => TinyRefiner.Write(RefinerFolder, RefinerFile);

    public void Dispose() => Directory.Delete(temp, recursive: true);

    private string RefinerFolder => Path.Combine(temp, "tiny-refiner");
    private string RefinerFile => Path.Combine(temp, "tiny-refiner.safetensors");

    private static readonly string[] Quick = ["--model", TinySdxl, "--prompt", "a red circle", "--seed", "7", "--steps", "4", "--sampler", "Euler"];

    [Fact]
    public void TheRefinerFinishesTheImageAndThePngInfoNamesItAndTheSwitch()
    {
        var png = Path.Combine(temp, "refined.png");
        var (exit, output, error) = GenerateCommandTests.Invoke(["generate", .. Quick, "--refiner", RefinerFolder, "--refiner-switch-at", "0.5", "--output", png]);

        Assert.True(exit == 0, error);
        Assert.Contains("seed 7: ", output);
        var info = GenerateCommandTests.ParametersOf(png);
        Assert.Equal("tiny-refiner", info["Refiner"]);
        Assert.Equal("0.5", info["Refiner switch at"]);
    }

    [Fact]
    public void TheSwitchDefaultsToA1111s()
    {
        var png = Path.Combine(temp, "refined.png");
        var (exit, _, error) = GenerateCommandTests.Invoke(["generate", .. Quick, "--refiner", RefinerFolder, "--output", png]);

        Assert.True(exit == 0, error);
        Assert.Equal("0.8", GenerateCommandTests.ParametersOf(png)["Refiner switch at"]);
    }

    [Fact]
    public void ARefinerSingleFileIsReadAsTheRealRefinersArchitecture()
    {
        // A single file carries no config: it is recognised as a refiner (one bigG embedder) and built from models/configs/sdxl_refiner,
        // which the tiny one does not fit.
        var (exit, _, error) = GenerateCommandTests.Invoke(["generate", .. Quick, "--refiner", RefinerFile, "--output", Path.Combine(temp, "x.png")]);

        Assert.Equal(1, exit);
        Assert.Contains("does not fit the unet architecture of", error);
        Assert.Contains(Path.Combine("models", "configs", "sdxl_refiner"), error);
        Assert.Contains("conv_in.bias is [16] in the file, [384] in the model", error);
    }

    [Theory]
    [InlineData(new[] { "--refiner-switch-at", "0.8" }, "error: --refiner-switch-at says when the refiner takes over: give --refiner too")]
    [InlineData(new[] { "--refiner", "REFINER", "--refiner-switch-at", "1" }, "error: --refiner-switch-at: is the fraction of the steps after which the refiner takes over, strictly between 0 and 1, got 1")]
    [InlineData(new[] { "--refiner", "no-such-refiner" }, "error: no-such-refiner: the model does not exist")]
    public void RefusalsNameTheFlag(string[] flags, string start)
    {
        var png = Path.Combine(temp, "x.png");
        var (exit, _, error) = GenerateCommandTests.Invoke(["generate", .. Quick, .. flags.Select(f => f == "REFINER" ? RefinerFolder : f), "--output", png]);

        Assert.Equal(1, exit);
        Assert.StartsWith(start, error);
        Assert.False(File.Exists(png));
    }
}
