using SdAppliance.Diffusion.Prompts;
using SdAppliance.Formats;

namespace SdAppliance.Diffusion.Tests;

public class ExtraNetworkTagsTests
{
    [Fact]
    public void LoraTagIsRemovedAndParsed()
    {
        var extracted = ExtraNetworkTags.Extract("a cat <lora:cuteStyle_v2:0.8> on a mat");
        Assert.Equal("a cat  on a mat", extracted.Text);
        var lora = Assert.Single(extracted.Tags);
        Assert.Equal(("lora", "cuteStyle_v2", 0.8, 0.8), (lora.Kind, lora.Name, lora.Multiplier, lora.UnetMultiplier));
        Assert.True(lora.IsLora);
    }

    [Fact]
    public void LoraWithoutWeightHasMultiplierOne()
    {
        var lora = Assert.Single(ExtraNetworkTags.Extract("<lora:foo>").Tags);
        Assert.Equal(("foo", 1.0, 1.0), (lora.Name, lora.Multiplier, lora.UnetMultiplier));
    }

    [Fact]
    public void LoraSeparateUnetMultiplierPositionalAndNamed()
    {
        var adapters = ExtraNetworkTags.Extract("<lora:a:0.8:0.5>, <lora:b:te=0.3:unet=0.7>, <lora:c:0.4:unet=0.9>").Tags;
        Assert.Equal([("a", 0.8, 0.5), ("b", 0.3, 0.7), ("c", 0.4, 0.9)],
            adapters.Select(a => (a.Name, a.Multiplier, a.UnetMultiplier)));
        Assert.Equal(["b"], adapters[1].Positional);
        Assert.Equal("0.7", adapters[1].Named["unet"]);
    }

    [Fact]
    public void HypernetworksAndOtherKindsAreExtractedInOrder()
    {
        var extracted = ExtraNetworkTags.Extract("<hypernet:anime:0.5>castle<lyco:x:0.25><foo:bar>, sky");
        Assert.Equal("castle, sky", extracted.Text);
        Assert.Equal([("hypernet", "anime", 0.5), ("lyco", "x", 0.25), ("foo", "bar", 1.0)],
            extracted.Tags.Select(a => (a.Kind, a.Name, a.Multiplier)));
        Assert.False(extracted.Tags[0].IsLora);
        Assert.True(extracted.Tags[1].IsLora);
    }

    [Fact]
    public void GoldenPromptWithLora()
    {
        var extracted = ExtraNetworkTags.Extract("a red circle, (blue square:0.8), <lora:foo:1>");
        Assert.Equal("a red circle, (blue square:0.8), ", extracted.Text);
        Assert.Equal(("foo", 1.0), (extracted.Tags[0].Name, extracted.Tags[0].Multiplier));
    }

    [Theory]
    [InlineData("a < b > c")]
    [InlineData("<notatag>")]
    [InlineData("<lora:>")]
    [InlineData("<lo ra:x:1>")]
    public void TextThatIsNotATagStays(string prompt)
    {
        var extracted = ExtraNetworkTags.Extract(prompt);
        Assert.Equal(prompt, extracted.Text);
        Assert.Empty(extracted.Tags);
    }

    [Fact]
    public void NonNumericMultiplierIsAnError()
    {
        var ex = Assert.Throws<UserInputException>(() => ExtraNetworkTags.Extract("<lora:foo:strong>"));
        Assert.Contains("<lora:foo:strong>", ex.Message);
    }
}
