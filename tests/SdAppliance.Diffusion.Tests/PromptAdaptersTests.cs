using SdAppliance.Diffusion.Prompts;
using SdAppliance.Formats;

namespace SdAppliance.Diffusion.Tests;

public class PromptAdaptersTests
{
    [Fact]
    public void LoraTagIsRemovedAndParsed()
    {
        var extracted = PromptAdapters.Extract("a cat <lora:cuteStyle_v2:0.8> on a mat");
        Assert.Equal("a cat  on a mat", extracted.Text);
        var lora = Assert.Single(extracted.Adapters);
        Assert.Equal(("lora", "cuteStyle_v2", 0.8, 0.8), (lora.Kind, lora.Name, lora.Multiplier, lora.UnetMultiplier));
        Assert.True(lora.IsLora);
    }

    [Fact]
    public void LoraWithoutWeightHasMultiplierOne()
    {
        var lora = Assert.Single(PromptAdapters.Extract("<lora:foo>").Adapters);
        Assert.Equal(("foo", 1.0, 1.0), (lora.Name, lora.Multiplier, lora.UnetMultiplier));
    }

    [Fact]
    public void LoraSeparateUnetMultiplierPositionalAndNamed()
    {
        var adapters = PromptAdapters.Extract("<lora:a:0.8:0.5>, <lora:b:te=0.3:unet=0.7>, <lora:c:0.4:unet=0.9>").Adapters;
        Assert.Equal([("a", 0.8, 0.5), ("b", 0.3, 0.7), ("c", 0.4, 0.9)],
            adapters.Select(a => (a.Name, a.Multiplier, a.UnetMultiplier)));
        Assert.Equal(["b"], adapters[1].Positional);
        Assert.Equal("0.7", adapters[1].Named["unet"]);
    }

    [Fact]
    public void HypernetworksAndOtherKindsAreExtractedInOrder()
    {
        var extracted = PromptAdapters.Extract("<hypernet:anime:0.5>castle<lyco:x:0.25><foo:bar>, sky");
        Assert.Equal("castle, sky", extracted.Text);
        Assert.Equal([("hypernet", "anime", 0.5), ("lyco", "x", 0.25), ("foo", "bar", 1.0)],
            extracted.Adapters.Select(a => (a.Kind, a.Name, a.Multiplier)));
        Assert.False(extracted.Adapters[0].IsLora);
        Assert.True(extracted.Adapters[1].IsLora);
    }

    [Fact]
    public void GoldenPromptWithLora()
    {
        var extracted = PromptAdapters.Extract("a red circle, (blue square:0.8), <lora:foo:1>");
        Assert.Equal("a red circle, (blue square:0.8), ", extracted.Text);
        Assert.Equal(("foo", 1.0), (extracted.Adapters[0].Name, extracted.Adapters[0].Multiplier));
    }

    [Theory]
    [InlineData("a < b > c")]
    [InlineData("<notatag>")]
    [InlineData("<lora:>")]
    [InlineData("<lo ra:x:1>")]
    public void TextThatIsNotATagStays(string prompt)
    {
        var extracted = PromptAdapters.Extract(prompt);
        Assert.Equal(prompt, extracted.Text);
        Assert.Empty(extracted.Adapters);
    }

    [Fact]
    public void NonNumericMultiplierIsAnError()
    {
        var ex = Assert.Throws<UserInputException>(() => PromptAdapters.Extract("<lora:foo:strong>"));
        Assert.Contains("<lora:foo:strong>", ex.Message);
    }
}
