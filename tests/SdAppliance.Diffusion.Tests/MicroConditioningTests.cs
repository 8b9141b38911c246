using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Imaging;

namespace SdAppliance.Diffusion.Tests;

/// <summary>The text forms of SDXL micro-conditioning: "H,W" / "T,L" (diffusers' order) and the PNG info keys.</summary>
public sealed class MicroConditioningTests
{
    [Theory]
    [InlineData("1024,768", 1024, 768)]
    [InlineData(" 1024 , 768 ", 1024, 768)]
    [InlineData("64,-8", 64, -8)]  // the request's rules refuse it, naming the field, with the range
    public void SizesReadHeightFirst(string text, int height, int width)
    {
        var size = ConditioningSize.Parse(text, "original_size");
        Assert.Equal(new ConditioningSize(height, width), size);
        Assert.Equal(size, ConditioningSize.Parse(size.ToString(), "original_size"));
    }

    [Fact]
    public void CropsReadTopFirst()
    {
        var crop = CropTopLeft.Parse("64,32", "crops_coords_top_left");
        Assert.Equal(new CropTopLeft(64, 32), crop);
        Assert.Equal("64,32", crop.ToString());
    }

    [Theory]
    [InlineData("1024,x")]
    [InlineData("1024")]
    [InlineData("1024x768")]
    [InlineData("1,2,3")]
    [InlineData("")]
    [InlineData("1.5,2")]
    public void TextThatIsNotTwoWholeNumbersIsRefusedNamingTheValueAndTheForm(string text)
    {
        var e = Assert.Throws<GenerationRequestException>(() => ConditioningSize.Parse(text, "negative_target_size"));
        Assert.Equal("negative_target_size", e.Field);
        Assert.StartsWith($"negative_target_size: '{text}': expected HEIGHT,WIDTH", e.Message);

        var crop = Assert.Throws<GenerationRequestException>(() => CropTopLeft.Parse(text, "crops_coords_top_left"));
        Assert.Contains("expected TOP,LEFT", crop.Message);
    }

    [Fact]
    public void APairOfAnotherLengthIsRefusedNamingTheField()
    {
        Assert.Equal(new ConditioningSize(1024, 768), ConditioningSize.FromPair([1024, 768], "original_size"));
        var e = Assert.Throws<GenerationRequestException>(() => ConditioningSize.FromPair([1024], "original_size"));
        Assert.Equal("original_size: expected [height, width], two whole numbers of pixels in diffusers' order, got 1 number", e.Message);
        Assert.Contains("[top, left]", Assert.Throws<GenerationRequestException>(() => CropTopLeft.FromPair([1, 2, 3], "crops_coords_top_left")).Message);
    }

    [Fact]
    public void AModelThatIsNotSdxlRefusesMicroConditioningByItsFirstField()
    {
        new GenerationRequest().CheckMicroConditioningApplies(isSdxl: false, "tiny-sd");
        new GenerationRequest { TargetSize = new(64, 64) }.CheckMicroConditioningApplies(isSdxl: true, "tiny-sdxl");
        var e = Assert.Throws<GenerationRequestException>(() =>
            new GenerationRequest { NegativeCropsCoordsTopLeft = new(0, 0), TargetSize = new(64, 64) }.CheckMicroConditioningApplies(isSdxl: false, "tiny-sd"));
        Assert.Equal("target_size", e.Field);
        Assert.Contains("tiny-sd is not an SDXL model", e.Message);
    }

    [Fact]
    public void PngInfoHoldsOnlyWhatDiffersFromTheDefaultsInA1111sSizeSpelling()
    {
        Assert.Empty(MicroConditioningInfotext.Settings(new GenerationRequest(), 64, 64));
        // Given, but equal to what the pipeline would use anyway: nothing to record.
        Assert.Empty(MicroConditioningInfotext.Settings(new GenerationRequest { OriginalSize = new(64, 96), CropsCoordsTopLeft = new(0, 0), NegativeTargetSize = new(64, 96) }, 96, 64));

        var x3 = new GenerationRequest { OriginalSize = new(1024, 768), CropsCoordsTopLeft = new(64, 32), TargetSize = new(768, 1024), NegativeOriginalSize = new(512, 512) };
        var settings = new A1111Parameters();
        foreach (var (key, value) in MicroConditioningInfotext.Settings(x3, 64, 64)) settings.Add(key, value);
        Assert.Equal("Original size: 768x1024, Crop top: 64, Crop left: 32, Target size: 1024x768, Negative original size: 512x512", settings.ToString());
        // A1111's parser splits them as its own sizes: -1 the width, -2 the height.
        var fields = A1111Parameters.Parse("p\nSteps: 1, " + settings).ToDictionary();
        Assert.Equal(("768", "1024"), (fields["Original size-1"], fields["Original size-2"]));
    }
}
