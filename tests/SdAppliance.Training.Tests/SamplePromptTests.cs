using SdAppliance.Training.Samples;

namespace SdAppliance.Training.Tests;

public sealed class SamplePromptTests : IDisposable
{
    private readonly string root = Directory.CreateTempSubdirectory("sdapp-samples-").FullName;

    public void Dispose() => Directory.Delete(root, recursive: true);

    private string Write(string name, string text)
    {
        var path = Path.Combine(root, name);
        File.WriteAllText(path, text);
        return path;
    }

    private static readonly TrainingConfig Run = new() { Resolution = 512, SampleSeed = 100, SampleSteps = 20, SampleSampler = "Euler a" };

    [Fact]
    public void AKohyaLineCarriesEveryOption()
    {
        var p = SamplePrompt.ParseLine("a cat in a hat --n blurry, lowres --w 512 --h 768 --d 42 --l 7.5 --s 28 --ss DPM++ 2M Karras", "line 1");
        Assert.Equal(new SamplePrompt("a cat in a hat")
        {
            NegativePrompt = "blurry, lowres", Width = 512, Height = 768, Seed = 42, CfgScale = 7.5, Steps = 28, Sampler = "DPM++ 2M Karras",
        }, p);
        // kohya clamps the steps; options are case-insensitive as its regexes.
        Assert.Equal(1000, SamplePrompt.ParseLine("x --S 5000", "line 1").Steps);
    }

    [Fact]
    public void WhatALineLeavesOutComesFromTheRunsSampleSettings()
    {
        var request = SamplePrompt.ParseLine("a dog --w 640", "line 1").Request(Run, 2);
        Assert.Equal(("a dog", "", 102L, 20, "Euler a", 640, 512), (request.Prompt, request.NegativePrompt, request.Seed, request.Steps, request.Sampler, request.Width, request.Height));
    }

    [Theory]
    [InlineData("a cat --w wide", "line 3: --w 'wide' is not a whole number")]
    [InlineData("a cat --l high", "line 3: --l 'high' is not a CFG scale (a number)")]
    [InlineData("a cat --g 3.5", "line 3: --g is not a sample option")]
    public void ABadOptionIsRefusedNamingTheLineAndTheValue(string line, string expected)
    {
        var error = Assert.Throws<TrainingConfigException>(() => SamplePrompt.ParseLine(line, "line 3"));
        Assert.StartsWith(expected, error.Message);
    }

    [Fact]
    public void TheThreeFileFormatsOfKohyaGiveTheSamePrompts()
    {
        var txt = Write("prompts.txt", "# the cast\n\na cat --n blurry --w 640 --d 5\n   \na dog --l 6 --s 30 --ss euler_a\n");
        var toml = Write("prompts.toml", """
            [prompt]
            width = 512
            [[prompt.subset]]
            prompt = "a cat"
            negative_prompt = "blurry"
            width = 640
            seed = 5
            [[prompt.subset]]
            prompt = "a dog"
            scale = 6
            sample_steps = 30
            sample_sampler = "euler_a"
            """);
        var json = Write("prompts.json", """["a cat --n blurry --w 640 --d 5", {"prompt": "a dog", "scale": 6, "sample_steps": 30, "sample_sampler": "euler_a", "width": 512}]""");
        SamplePrompt[] expected =
        [
            new("a cat") { NegativePrompt = "blurry", Width = 640, Seed = 5 },
            new("a dog") { CfgScale = 6, Steps = 30, Sampler = "euler_a" },
        ];
        Assert.Equal(expected, SamplePrompt.Load(txt, Run));
        // [prompt]'s keys reach every subset.
        Assert.Equal([expected[0], expected[1] with { Width = 512 }], SamplePrompt.Load(toml, Run));
        Assert.Equal([expected[0], expected[1] with { Width = 512 }], SamplePrompt.Load(json, Run));
        Assert.Equal(expected, SamplePrompt.Of(Run with { SamplePromptsFile = txt }, "a caption"));
    }

    [Fact]
    public void AFileMistakeNamesTheFileThePromptAndTheField()
    {
        var txt = Write("bad.txt", "a cat\na dog --w 500\n");
        var error = Assert.Throws<TrainingConfigException>(() => SamplePrompt.Load(txt, Run));
        Assert.Equal("sample_prompts_file", error.Subject);
        Assert.Contains($"'{txt}' prompt 2: width", error.Message);
        Assert.Contains("500", error.Message);
        Assert.StartsWith("sample_prompts_file: ", Assert.Throws<TrainingConfigException>(() => SamplePrompt.Load(Path.Combine(root, "none.txt"), Run)).Message);
        var toml = Write("bad.toml", "[prompt]\n[[prompt.subset]]\nprompt = \"a\"\nguidance = 3\n");
        Assert.Contains("guidance is not a sample prompt key", Assert.Throws<TrainingConfigException>(() => SamplePrompt.Load(toml, Run)).Message);
    }

    [Fact]
    public void WithoutPromptsTheInstancePromptOrTheFirstCaptionIsDrawn()
    {
        Assert.Equal([new SamplePrompt("a zwx")], SamplePrompt.Of(Run with { InstancePrompt = "a zwx" }, "a caption"));
        Assert.Equal([new SamplePrompt("a caption")], SamplePrompt.Of(Run, "a caption"));
        Assert.Equal([new SamplePrompt("a cat") { Width = 768 }], SamplePrompt.Of(Run with { SamplePrompts = ["a cat --w 768"] }, "a caption"));
        Assert.Equal("sample_prompts_file: give the sample prompts in the file or in sample_prompts, not both",
            Assert.Throws<TrainingConfigException>(() => (Run with { Output = "o", Data = "d", SamplePrompts = ["a"], SamplePromptsFile = "p.txt" }).Validate()).Message);
    }
}
