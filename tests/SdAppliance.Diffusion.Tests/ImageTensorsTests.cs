using SdAppliance.Diffusion.Images;
using SdAppliance.Formats;
using SdAppliance.Imaging;
using SdAppliance.Torch;
using SdAppliance.Torch.Serialization;

namespace SdAppliance.Diffusion.Tests;

public class ImageTensorsTests
{
    private static string Fixture(params string[] parts) => Path.Combine([AppContext.BaseDirectory, "Fixtures", .. parts]);

    [Theory]
    [InlineData("p1_pndm")]
    [InlineData("p2_euler_a")]
    [InlineData("p3_dpmpp_karras")]
    public void DecodedImagesBecomeTheReferenceUint8PixelsExactly(string id)
    {
        // decoded -> uint8 is the last step of every pipeline: it must round exactly as NumPy did.
        using var golden = TensorFile.Open(Fixture("pipelines", id + ".safetensors"));
        using var decoded = golden.ReadTensor("decoded");
        var image = ImageTensors.ToImages(decoded)[0];
        using var expected = golden.ReadTensor("image_uint8");
        Assert.Equal(expected.ToArray<byte>(), image.Pixels);
        Assert.Equal(ImageCodec.Load(Fixture("pipelines", id + ".png")).Pixels, image.Pixels);
    }

    [Fact]
    public void ImageRoundTripsThroughTheTensorRange()
    {
        var pixels = Enumerable.Range(0, 4 * 2 * 3).Select(i => (byte)(i * 11)).ToArray();
        var image = new RgbImage(4, 2, 3, pixels);
        using var t = ImageTensors.ToTensor(image);
        Assert.Equal([1L, 3, 2, 4], t.Shape);
        Assert.Equal(-1f, t.ToArray<float>()[0]);  // pixel 0 = 0
        Assert.Equal(pixels, ImageTensors.ToImages(t)[0].Pixels);
    }

    [Fact]
    public void ResizeAndCenterCropCoversTheTarget()
    {
        // A 8x4 image: left half black, right half white; cropping to 4x4 keeps the middle columns.
        var pixels = new byte[8 * 4 * 3];
        for (var y = 0; y < 4; y++)
            for (var x = 4; x < 8; x++)
                pixels.AsSpan((y * 8 + x) * 3, 3).Fill(255);
        var cropped = ImageTensors.ResizeAndCenterCrop(new RgbImage(8, 4, 3, pixels), 4, 4);
        Assert.Equal((4, 4), (cropped.Width, cropped.Height));
        Assert.Equal(0, cropped.Pixel(0, 0)[0]);
        Assert.Equal(255, cropped.Pixel(3, 0)[0]);

        var half = ImageTensors.Resize(new RgbImage(8, 4, 3, pixels), 4, 2);
        Assert.Equal((4, 2), (half.Width, half.Height));
        // Antialiased downscaling keeps the hard edge's sides pure away from the edge.
        Assert.True(half.Pixel(0, 0)[0] < 10 && half.Pixel(3, 0)[0] > 245);
    }
}
