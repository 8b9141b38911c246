using System.Buffers.Binary;
using System.Text;

namespace SdAppliance.Imaging.Tests;

public class WebPTests
{
    private static readonly ImageEncodeOptions Lossy90 = new() { Format = ImageFormat.WebP, Quality = 90 };
    private static readonly ImageEncodeOptions Lossless = new() { Format = ImageFormat.WebP, Lossless = true };

    [Fact]
    public void LossyRoundTripStaysClose()
    {
        var image = TestImages.Gradient(61, 47, 3);
        byte[] webp = ImageCodec.Encode(image, Lossy90);
        Assert.Equal(ImageFormat.WebP, ImageCodec.DetectFormat(webp));
        var decoded = ImageCodec.Decode(webp);
        Assert.Equal((61, 47, 3), (decoded.Width, decoded.Height, decoded.Channels));
        // Lossy WebP is VP8: always 4:2:0 chroma and a coarser quantiser than JPEG at the same number, so a
        // ramp comes back within several levels: measured mean 1.24, max 9 with Debian's libwebp 1.2.4.
        // The bounds allow about twice that; a channel swap or a stride error would be off by tens.
        Assert.True(TestImages.MeanAbsDifference(image, decoded) < 2.5);
        Assert.True(TestImages.MaxAbsDifference(image, decoded) <= 20);
    }

    [Fact]
    public void LossyRgbaKeepsAlphaExactly()
    {
        var image = TestImages.Gradient(40, 30, 4);
        var decoded = ImageCodec.Decode(ImageCodec.Encode(image, Lossy90));
        Assert.Equal(4, decoded.Channels);
        // The simple API codes alpha losslessly (alpha_quality 100); only colour is lossy.
        for (int i = 3; i < image.Pixels.Length; i += 4)
        {
            Assert.Equal(image.Pixels[i], decoded.Pixels[i]);
        }
    }

    [Fact]
    public void LosslessRgbIsExact()
    {
        var image = TestImages.Noise(37, 23, 3, seed: 11);
        var decoded = ImageCodec.Decode(ImageCodec.Encode(image, Lossless));
        Assert.Equal(3, decoded.Channels);
        Assert.Equal(image.Pixels, decoded.Pixels);
    }

    [Fact]
    public void LosslessRgbaIsExactWhereVisible()
    {
        var image = TestImages.Noise(37, 23, 4, seed: 12);
        for (int i = 3; i < image.Pixels.Length; i += 40)
        {
            image.Pixels[i] = 0; // some fully transparent pixels
        }
        var decoded = ImageCodec.Decode(ImageCodec.Encode(image, Lossless));
        Assert.Equal(4, decoded.Channels);
        // libwebp's simple lossless API may change the colour of alpha-0 pixels (its 'exact' is off).
        for (int i = 0; i < image.Pixels.Length; i += 4)
        {
            int visible = image.Pixels[i + 3] == 0 ? 3 : 0;
            Assert.True(image.Pixels.AsSpan(i + visible, 4 - visible).SequenceEqual(decoded.Pixels.AsSpan(i + visible, 4 - visible)), $"pixel {i / 4}");
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void ParametersTravelAsExifUserComment(bool lossless)
    {
        var image = TestImages.Gradient(16, 12, 4);
        image.Text[ImageCodec.ParametersKey] = "ein Schloß, 城\nSteps: 20, Seed: 1";
        byte[] webp = ImageCodec.Encode(image, Lossless with { Lossless = lossless });

        // The file is extended WebP: RIFF size right, VP8X flags announce EXIF and alpha, canvas size right.
        Assert.Equal((uint)(webp.Length - 8), BinaryPrimitives.ReadUInt32LittleEndian(webp.AsSpan(4)));
        Assert.Equal("VP8X", Encoding.ASCII.GetString(webp, 12, 4));
        Assert.Equal(0x18, webp[20] & 0x18);
        Assert.Equal(15, webp[24] | (webp[25] << 8) | (webp[26] << 16));
        Assert.Equal(11, webp[27] | (webp[28] << 8) | (webp[29] << 16));

        var decoded = ImageCodec.Decode(webp);
        Assert.Equal((16, 12, 4), (decoded.Width, decoded.Height, decoded.Channels));
        Assert.Equal(image.Text[ImageCodec.ParametersKey], decoded.Text[ImageCodec.ParametersKey]);
        if (lossless)
        {
            // Flattened, so that the colours under alpha 0 (which libwebp may change) do not count.
            Assert.Equal(image.FlattenAlpha().Pixels, decoded.FlattenAlpha().Pixels);
        }
    }

    [Fact]
    public void ExifOrientationApplies()
    {
        var image = TestImages.Quadrants(32, 16);
        byte[] webp = WebPCodec.AddExif(ImageCodec.Encode(image, Lossless), JpegTests.OrientationTiff(6, littleEndian: false), image);
        var decoded = ImageCodec.Decode(webp);
        Assert.Equal((16, 32), (decoded.Width, decoded.Height));
        Assert.Equal([255, 0, 0], decoded.Pixel(15, 0).ToArray()); // stored top-left, rotated 90 clockwise
        Assert.Equal(new ImageInfo(ImageFormat.WebP, 16, 32, false), ImageCodec.Identify(webp));
    }

    [Fact]
    public void TruncatedFileIsReported()
    {
        byte[] webp = ImageCodec.Encode(TestImages.Noise(64, 64, 3, seed: 13), Lossy90);
        using var folder = new TempFolder();
        foreach (int length in new[] { 12, 20, 40, webp.Length / 2, webp.Length - 1 })
        {
            string path = folder.File($"cut{length}.webp");
            File.WriteAllBytes(path, webp[..length]);
            var error = Assert.Throws<ImageFormatException>(() => ImageCodec.Load(path));
            Assert.Contains(path, error.Message);
        }
    }

    [Fact]
    public void GarbageAfterTheHeaderIsReported()
    {
        byte[] webp = [.. "RIFF"u8, 100, 0, 0, 0, .. "WEBP"u8, .. "VP8 "u8, .. new byte[92].Select((_, i) => (byte)(i * 29))];
        Assert.Throws<ImageFormatException>(() => ImageCodec.Decode(webp));
    }

    [Fact]
    public void OversizedImageIsRefusedWithAReason()
    {
        var error = Assert.Throws<ImageFormatException>(() => ImageCodec.Encode(new RgbImage(16384, 1, 3), Lossless));
        Assert.Contains("16383", error.Message);
    }
}
