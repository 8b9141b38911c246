using System.CommandLine;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using SdAppliance.Appliance.Storage;
using SdAppliance.Cli.Commands;
using SdAppliance.Formats;
using SdAppliance.Formats.Hashing;
using SdAppliance.Imaging;

namespace SdAppliance.Cli.Tests;

/// <summary>
/// <c>sdapp generate</c> run in-process on the tiny fixture model. The reference image p1_pndm.png
/// was made by diffusers with the prompt, seed, sampler, steps and CFG of <see cref="P1"/>.
/// </summary>
public sealed class GenerateCommandTests : IDisposable
{
    internal static readonly string Fixtures = Path.Combine(AppContext.BaseDirectory, "Fixtures");
    internal static readonly string TinyFolder = Path.Combine(Fixtures, "tiny-sd");
    internal static readonly string TinyLdm = Path.Combine(Fixtures, "tiny-sd.ldm.safetensors");

    internal static readonly string[] P1 =
        ["--prompt", "a photo of a red circle on a blue background", "--seed", "42", "--steps", "10", "--sampler", "PNDMScheduler", "--cfg", "7.5"];

    private readonly string temp = Directory.CreateTempSubdirectory("sdapp-generate-").FullName;

    public void Dispose() => Directory.Delete(temp, recursive: true);

    internal static (int ExitCode, string Output, string Error) Invoke(params string[] args) => Invoke(SdappCommand.Create(), args);

    internal static (int ExitCode, string Output, string Error) Invoke(RootCommand root, params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        var exit = root.Parse(args).Invoke(new InvocationConfiguration { Output = output, Error = error });
        return (exit, output.ToString(), error.ToString());
    }

    /// <summary>A root command whose generate command sees <paramref name="paths"/> as the application's folders.</summary>
    private static RootCommand WithPaths(DataFolder paths) => new() { GenerateCommand.Create(() => paths) };

    /// <summary>The README's tolerance: float32 sums in another order move a pixel by at most one step of 1/255.</summary>
    internal static void AssertLooksLikeP1(string png) => AssertLooksLike(Path.Combine(Fixtures, "pipelines", "p1_pndm.png"), png);

    /// <summary>The README's tolerance for every pipeline run: at most one step of 1/255 per pixel.</summary>
    internal static void AssertLooksLike(string reference, string png)
    {
        var image = ImageCodec.Load(png);
        var expected = ImageCodec.Load(reference);
        Assert.Equal((expected.Width, expected.Height, expected.Channels), (image.Width, image.Height, image.Channels));
        var maxDiff = expected.Pixels.Zip(image.Pixels, (a, b) => Math.Abs(a - b)).Max();
        Assert.True(maxDiff <= 1, $"max pixel difference {maxDiff}");
    }

    internal static A1111Parameters ParametersOf(string png)
    {
        var image = ImageCodec.Load(png);
        Assert.True(image.Text.TryGetValue(ImageCodec.ParametersKey, out var text), "no parameters chunk");
        return A1111Parameters.Parse(text);
    }

    private static void AssertOneCleanErrorLine(string error)
    {
        Assert.StartsWith("error: ", error);
        Assert.Single(error.TrimEnd().Split('\n'));
        Assert.DoesNotContain("   at ", error);
    }

    [Fact]
    public void ReproducesTheReferenceImageWithItsParameters()
    {
        var png = Path.Combine(temp, "p1.png");
        var (exit, output, error) = Invoke(["generate", "--model", TinyFolder, .. P1, "--output", png]);

        Assert.True(exit == 0, error);
        Assert.Equal($"seed 42: {png}", output.Trim());
        AssertLooksLikeP1(png);
        var parameters = ParametersOf(png);
        Assert.Equal("a photo of a red circle on a blue background", parameters.Prompt);
        Assert.Equal("42", parameters["Seed"]);
        Assert.Equal("10", parameters["Steps"]);
        Assert.Equal("7.5", parameters["CFG scale"]);
        Assert.Equal("64x64", parameters["Size"]);  // the tiny model's native size: sample_size 8 x 8
        Assert.Equal("tiny-sd", parameters["Model"]);
        Assert.Null(parameters["Model hash"]);  // a folder has no one file to hash
        // Redirected stderr gets one summary line per image instead of a bar.
        Assert.Matches(@"^image 1/1: 11 steps, [\d.]+ s", error);
        Assert.Equal([Path.GetFileName(png)], Directory.GetFileSystemEntries(temp).Select(Path.GetFileName));  // no temp file left
    }

    [Fact]
    public void SingleFileWithConfigGivesTheSameImage()
    {
        var png = Path.Combine(temp, "p1.png");
        var (exit, _, error) = Invoke(["generate", "--model", TinyLdm, "--config", TinyFolder, .. P1, "--output", png]);

        Assert.True(exit == 0, error);
        AssertLooksLikeP1(png);
        var parameters = ParametersOf(png);
        Assert.Equal("tiny-sd.ldm", parameters["Model"]);
        using var stream = File.OpenRead(TinyLdm);
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(stream))[..10], parameters["Model hash"]);
    }

    [Fact]
    public void BatchesAreNumberedAndSeedsCountUp()
    {
        var png = Path.Combine(temp, "out", "cat.png");  // the folder is made
        var (exit, output, error) = Invoke("generate", "--model", TinyFolder, "--prompt", "a cat", "--seed", "5", "--steps", "2", "--sampler", "euler",
            "--batch", "2", "--output", png);

        Assert.True(exit == 0, error);
        var first = Path.Combine(temp, "out", "cat-0.png");
        var second = Path.Combine(temp, "out", "cat-1.png");
        Assert.Equal([$"seed 5: {first}", $"seed 6: {second}"], output.Trim().Split('\n'));
        Assert.False(File.Exists(png));
        Assert.Equal("5", ParametersOf(first)["Seed"]);
        Assert.Equal("6", ParametersOf(second)["Seed"]);
        Assert.Equal("Euler", ParametersOf(first)["Sampler"]);
        Assert.Equal(2, Regex.Matches(error, @"(?m)^image \d/2: ").Count);
    }

    [Fact]
    public void ATurboModelLeftToItsDefaultsRunsOneEulerAStepWithoutGuidanceAndSaysWhy()
    {
        // The tiny model under a Turbo name (a single file or folder says nothing else).
        var turbo = Path.Combine(temp, "sd-turbo");
        foreach (var file in Directory.EnumerateFiles(TinyFolder, "*", SearchOption.AllDirectories))
        {
            var target = Path.Combine(turbo, Path.GetRelativePath(TinyFolder, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
        var png = Path.Combine(temp, "turbo.png");
        var (exit, _, error) = Invoke("generate", "--model", turbo, "--prompt", "a cat", "--seed", "3", "--output", png);

        Assert.True(exit == 0, error);
        Assert.Contains("defaults: Turbo (the folder name 'sd-turbo' says Turbo): Euler a, 1 step, CFG 1, trailing timesteps", error, StringComparison.Ordinal);
        var parameters = ParametersOf(png);
        Assert.Equal(("1", "Euler a", "1.0"), (parameters["Steps"], parameters["Sampler"], parameters["CFG scale"]));

        // What the user gives wins.
        (exit, _, error) = Invoke("generate", "--model", turbo, "--prompt", "a cat", "--seed", "3", "--steps", "2", "--cfg", "2", "--output", png);
        Assert.True(exit == 0, error);
        Assert.Equal(("2", "Euler a", "2.0"), (ParametersOf(png)["Steps"], ParametersOf(png)["Sampler"], ParametersOf(png)["CFG scale"]));
    }

    [Fact]
    public void ARandomSeedIsPrintedAndRecorded()
    {
        var png = Path.Combine(temp, "random.png");
        var (exit, output, error) = Invoke("generate", "--model", TinyFolder, "--prompt", "a cat", "--steps", "1", "--output", png);

        Assert.True(exit == 0, error);
        var seed = Regex.Match(output, @"^seed (\d+): ").Groups[1].Value;
        Assert.NotEmpty(seed);
        var parameters = ParametersOf(png);
        Assert.Equal(seed, parameters["Seed"]);
        Assert.Equal("1", parameters["Steps"]);
        Assert.Equal("DPM++ 2M Karras", parameters["Sampler"]);  // A1111's default sampler
        Assert.Equal("7.0", parameters["CFG scale"]);  // and CFG
    }

    [Fact]
    public void UnknownSamplerFailsListingTheNames()
    {
        var png = Path.Combine(temp, "x.png");
        var (exit, output, error) = Invoke("generate", "--model", TinyFolder, "--prompt", "a cat", "--sampler", "Euler b", "--output", png);

        Assert.Equal(1, exit);
        Assert.Equal("", output);
        AssertOneCleanErrorLine(error);
        Assert.Contains("unknown sampler 'Euler b'", error);
        foreach (var name in new[] { "\"Euler a\"", "dpmpp_2m_karras", "\"DPM++ 2M Karras\"", "PNDMScheduler", "\"UniPC\"" })
            Assert.Contains(name, error);
        Assert.False(File.Exists(png));
    }

    [Theory]
    [InlineData("--width", "65", "--width: must be a positive multiple of 8 (the VAE works on multiples of 8 pixels), got 65")]
    [InlineData("--height", "0", "--height: must be a positive multiple of 8 (the VAE works on multiples of 8 pixels), got 0")]
    [InlineData("--steps", "0", "--steps: must be at least 1, got 0")]
    [InlineData("--batch", "0", "--batch: must be at least 1, got 0")]
    [InlineData("--clip-skip", "0", "--clip-skip: counts from 1")]
    [InlineData("--strength", "0.5", "give --init-image too")]
    [InlineData("--lora", "no-such-lora.safetensors:0.8", "the file 'no-such-lora.safetensors' does not exist")]
    [InlineData("--model", "no-such-model", "no-such-model: the model does not exist")]
    [InlineData("--device", "tpu", "unknown device 'tpu'")]
    public void BadRequestsFailWithOneLine(string option, string value, string message)
    {
        var png = Path.Combine(temp, "x.png");
        string[] model = option == "--model" ? [] : ["--model", TinyFolder];
        var (exit, _, error) = Invoke(["generate", .. model, "--prompt", "a cat", option, value, "--output", png]);

        Assert.Equal(1, exit);
        AssertOneCleanErrorLine(error);
        Assert.Contains(message, error);
        Assert.False(File.Exists(png));
    }

    [Theory]
    [InlineData("--cfg", "NaN", "error: --cfg: must be a finite number, got NaN")]
    [InlineData("--sampler", "Euler b", "error: --sampler: unknown sampler 'Euler b'")]
    [InlineData("--config", "no-such-folder", "error: --config: 'no-such-folder' is not a folder")]
    [InlineData("--lora", "no-such-lora.safetensors:0.8", "error: --lora: the file 'no-such-lora.safetensors' does not exist")]
    public void RefusalsNameTheFlagOfTheFieldAtFault(string option, string value, string start)
    {
        // The library names the field (cfg_scale, sampler, config_directory, loras); the command line says its flag.
        var (exit, _, error) = Invoke("generate", "--model", TinyFolder, "--prompt", "a cat", option, value, "--output", Path.Combine(temp, "x.png"));

        Assert.Equal(1, exit);
        AssertOneCleanErrorLine(error);
        Assert.StartsWith(start, error);
    }

    [Fact]
    public void ABrokenConfigJsonIsRefusedNamingTheFileAndTheLine()
    {
        var model = Path.Combine(temp, "broken");
        CopyFolder(TinyFolder, model);
        var config = Path.Combine(model, "unet", "config.json");
        File.WriteAllText(config, "{\n  \"in_channels\": 4,\n  \"out_channels\" 4\n}");

        var (exit, _, error) = Invoke("generate", "--model", model, "--prompt", "a cat", "--steps", "1", "--output", Path.Combine(temp, "x.png"));

        Assert.Equal(1, exit);
        AssertOneCleanErrorLine(error);
        Assert.StartsWith($"error: {config}: ", error);
        Assert.Contains("Expected a ':'", error);  // System.Text.Json's reason, with where it is
        Assert.DoesNotContain("Exception", error);
    }

    [Fact]
    public void TheModelHashIsKeptInTheDataFolderSoTheNextRunDoesNotHashAgain()
    {
        var paths = new DataFolder(Path.Combine(temp, "data"));
        string[] args = ["generate", "--model", TinyLdm, "--config", TinyFolder, "--prompt", "a cat", "--steps", "1"];
        var (exit, _, error) = Invoke(WithPaths(paths), [.. args, "--output", Path.Combine(temp, "a.png")]);
        Assert.True(exit == 0, error);

        using (var stream = File.OpenRead(TinyLdm))
            Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(stream))[..10], ParametersOf(Path.Combine(temp, "a.png"))["Model hash"]);
        Assert.Contains(Path.GetFullPath(TinyLdm), File.ReadAllText(paths.HashCache));

        // A cached hash is what the next run writes: tamper with the cache and the PNG shows the cached value.
        File.WriteAllText(paths.HashCache, File.ReadAllText(paths.HashCache).Replace(new FileHashes(null).Sha256(TinyLdm), new string('0', 64)));
        (exit, _, error) = Invoke(WithPaths(paths), [.. args, "--output", Path.Combine(temp, "b.png")]);
        Assert.True(exit == 0, error);
        Assert.Equal("0000000000", ParametersOf(Path.Combine(temp, "b.png"))["Model hash"]);
    }

    [Fact]
    public void AFileThatIsNotALoraFailsWithOneLine()
    {
        // A real safetensors file without LoRA keys: it is only found out once the pipeline opens it.
        var png = Path.Combine(temp, "x.png");
        var notLora = Path.Combine(TinyFolder, "vae", "diffusion_pytorch_model.safetensors");
        var (exit, _, error) = Invoke("generate", "--model", TinyFolder, "--prompt", "a cat", "--steps", "1", "--lora", notLora + ":0.5", "--output", png);

        Assert.Equal(1, exit);
        AssertOneCleanErrorLine(error);
        Assert.Contains("holds no LoRA weights", error);
        Assert.False(File.Exists(png));
    }

    [Fact]
    public void ALoraThatMatchesNothingIsAWarningAfterTheImages()
    {
        var lora = Path.Combine(temp, "nowhere.safetensors");
        SafetensorsFile.Write(lora,
        [
            new SafetensorsTensor("lora_unet_no_such_layer.lora_down.weight", SafetensorsDType.F32, [2, 32], new byte[2 * 32 * 4]),
            new SafetensorsTensor("lora_unet_no_such_layer.lora_up.weight", SafetensorsDType.F32, [32, 2], new byte[32 * 2 * 4]),
        ]);
        var png = Path.Combine(temp, "x.png");
        var (exit, output, error) = Invoke("generate", "--model", TinyFolder, "--prompt", "a cat", "--steps", "1", "--lora", lora + ":0.5", "--output", png);

        Assert.Equal(0, exit);
        Assert.Contains(png, output);
        Assert.Contains("warning: lora nowhere: none of its 1 modules matches a layer of this model", error);
    }

    [Fact]
    public void PromptLoraThatIsNowhereNamesTheFolders()
    {
        var root = Directory.CreateDirectory(Path.Combine(temp, "app")).FullName;
        var png = Path.Combine(temp, "x.png");
        var (exit, _, error) = Invoke(WithPaths(new DataFolder(Path.Combine(temp, "data"), root)),
            "generate", "--model", TinyFolder, "--prompt", "a cat <lora:ink:0.7>", "--steps", "1", "--output", png);

        Assert.Equal(1, exit);
        AssertOneCleanErrorLine(error);
        Assert.Contains("ink.safetensors", error);
        Assert.Contains(Path.Combine(root, "models", "lora"), error);
        Assert.Contains(Path.Combine(temp, "data", "models", "lora"), error);
    }

    [Fact]
    public void WithoutModelAndWithoutDemoItSaysSo()
    {
        var paths = new DataFolder(Path.Combine(temp, "data"), Directory.CreateDirectory(Path.Combine(temp, "app")).FullName);
        var (exit, _, error) = Invoke(WithPaths(paths), "generate", "--prompt", "a cat", "--output", Path.Combine(temp, "x.png"));

        Assert.Equal(1, exit);
        Assert.Equal("error: no --model given and no default model (models/demo) found", error.Trim());
    }

    [Fact]
    public void WithoutModelTheDemoModelIsUsed()
    {
        var root = Path.Combine(temp, "app");
        CopyFolder(TinyFolder, Path.Combine(root, "models", "demo"));
        var png = Path.Combine(temp, "demo.png");
        var (exit, _, error) = Invoke(WithPaths(new DataFolder(Path.Combine(temp, "data"), root)), "generate", "--prompt", "a cat", "--steps", "1", "--output", png);

        Assert.True(exit == 0, error);
        Assert.Equal("demo", ParametersOf(png)["Model"]);
    }

    [Fact]
    public void TheApplicationRootIsTheFolderHoldingModelConfigs()
    {
        // The tests run from the repository's build output, so the walk up ends at the repository.
        var paths = DataFolder.Discover();
        Assert.NotNull(paths.ApplicationRoot);
        Assert.True(Directory.Exists(Path.Combine(paths.ApplicationRoot, "models", "configs", "sd15")));
        Assert.StartsWith(paths.ApplicationRoot, AppContext.BaseDirectory);
        Assert.Equal([Path.Combine(paths.ApplicationRoot, "models", "lora"), Path.Combine(paths.FullPath, "models", "lora")], paths.LoraFolders);
        Assert.Equal([Path.Combine(paths.ApplicationRoot, "models", "embeddings"), Path.Combine(paths.FullPath, "models", "embeddings")], paths.EmbeddingFolders);
    }

    [Fact]
    public void Img2ImgRecordsTheStrength()
    {
        var png = Path.Combine(temp, "i2i.png");
        var init = Path.Combine(Fixtures, "pipelines", "p1_pndm.png");
        var (exit, _, error) = Invoke("generate", "--model", TinyFolder, "--prompt", "a cat", "--seed", "3", "--steps", "4", "--sampler", "DDIM",
            "--init-image", init, "--strength", "0.5", "--output", png);

        Assert.True(exit == 0, error);
        Assert.Equal("0.5", ParametersOf(png)["Denoising strength"]);
        Assert.Matches(@"^image 1/1: 2 steps", error);  // half of the 4 steps
    }

    [Theory]
    [InlineData("weights.safetensors:0.8", "weights.safetensors", 0.8)]
    [InlineData("weights.safetensors", "weights.safetensors", 1.0)]
    [InlineData("weights.safetensors:-0.25", "weights.safetensors", -0.25)]
    public void LoraSpecsSplitAtTheLastColon(string spec, string file, double weight)
    {
        var path = Path.Combine(temp, file);
        File.WriteAllBytes(path, []);
        var prefix = temp + Path.DirectorySeparatorChar;
        Assert.Equal((path, weight), GenerateCommand.ParseLora(prefix + spec));
    }

    [Fact]
    public void BatchFileNamesKeepTheFolderAndExtension()
    {
        Assert.Equal(["out/x.png"], GenerateCommand.OutputFiles("out/x.png", 1));
        Assert.Equal(["out/x-0.png", "out/x-1.png", "out/x-2.png"], GenerateCommand.OutputFiles("out/x.png", 3));
        Assert.Contains(".gif", Assert.Throws<UserInputException>(() => GenerateCommand.OutputFiles("x.gif", 1)).Message);
    }

    [Fact]
    public void ProgressBarShowsStepsRateAndTime()
    {
        using var writer = new StringWriter();
        var bar = new ProgressBar(writer, interactive: true, "generating", "steps", "it/s");
        Assert.Equal("generating [###############...............] 5/10 steps  2.50 it/s  00:02", bar.Render(5, 10, TimeSpan.FromSeconds(2)));
        Assert.Equal("1:01:05", ProgressBar.Clock(TimeSpan.FromSeconds(3665)));
        bar.Update(10, 10);
        bar.Finish();
        Assert.StartsWith("\rgenerating [##############################] 10/10 steps", writer.ToString());
        Assert.EndsWith(Environment.NewLine, writer.ToString());

        using var redirected = new StringWriter();
        var quiet = new ProgressBar(redirected, interactive: false, "generating", "steps", "it/s");
        quiet.Update(3, 10);
        quiet.Finish();
        Assert.Equal("", redirected.ToString());
        Assert.False(ProgressBar.IsTerminal(redirected));
    }

    [Fact]
    public void HelpListsGenerateAndConvert()
    {
        var (exit, output, _) = Invoke("--help");
        Assert.Equal(0, exit);
        Assert.Matches(@"(?m)^\s+generate\s+\S", output);
        Assert.Matches(@"(?m)^\s+convert\s+\S", output);
    }

    internal static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var file in Directory.GetFiles(from)) File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
        foreach (var dir in Directory.GetDirectories(from)) CopyFolder(dir, Path.Combine(to, Path.GetFileName(dir)));
    }
}
