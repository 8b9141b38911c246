using System.Buffers.Binary;
using System.Text;

namespace SdAppliance.Imaging.Tests;

public class JpegTests
{
    private static readonly ImageEncodeOptions Jpeg95 = new() { Format = ImageFormat.Jpeg, Quality = 95, JpegSubsampling = JpegSubsampling.Yuv444 };

    [Fact]
    public void RoundTripStaysCloseAtHighQuality()
    {
        var image = TestImages.Gradient(61, 47, 3);
        byte[] jpeg = ImageCodec.Encode(image, Jpeg95);
        Assert.Equal(ImageFormat.Jpeg, ImageCodec.DetectFormat(jpeg));
        var decoded = ImageCodec.Decode(jpeg);
        Assert.Equal((61, 47, 3), (decoded.Width, decoded.Height, decoded.Channels));
        // At quality 95 the standard quantisation tables are scaled by 0.1, to steps of 1-3 levels, so a
        // smooth ramp comes back within a few levels: measured mean 0.71, max 4 with Debian's libjpeg-turbo.
        // The bounds allow about twice that for another build's DCT rounding; swapped channels or a wrong
        // stride would be off by tens.
        Assert.True(TestImages.MeanAbsDifference(image, decoded) < 1.5);
        Assert.True(TestImages.MaxAbsDifference(image, decoded) <= 8);
    }

    [Fact]
    public void LowerQualityIsSmallerAndLessExact()
    {
        var image = TestImages.Noise(64, 64, 3, seed: 5);
        byte[] high = ImageCodec.Encode(image, Jpeg95);
        byte[] low = ImageCodec.Encode(image, Jpeg95 with { Quality = 30, JpegSubsampling = JpegSubsampling.Yuv420 });
        Assert.True(low.Length < high.Length / 2);
        Assert.True(TestImages.MeanAbsDifference(image, ImageCodec.Decode(low)) > TestImages.MeanAbsDifference(image, ImageCodec.Decode(high)));
    }

    [Fact]
    public void RgbaIsFlattenedOntoTheBackground()
    {
        var image = new RgbImage(16, 16, 4);
        image.Pixels.AsSpan().Fill(0); // transparent black everywhere
        byte[] jpeg = ImageCodec.Encode(image, Jpeg95 with { Background = new Rgb(0, 0, 255) });
        var decoded = ImageCodec.Decode(jpeg);
        Assert.Equal(3, decoded.Channels);
        var p = decoded.Pixel(8, 8).ToArray();
        // Solid blue through YCbCr at quality 95: within a couple of levels.
        Assert.InRange(p[0], 0, 3);
        Assert.InRange(p[1], 0, 3);
        Assert.InRange(p[2], 252, 255);
    }

    public static TheoryData<int, bool> Orientations => new()
    {
        { 1, true }, { 3, true }, { 6, true }, { 8, true },
        { 3, false }, { 6, false }, { 8, false }, { 2, false }, { 5, true }, { 7, false },
    };

    [Theory]
    [MemberData(nameof(Orientations))]
    public void ExifOrientationTurnsPixelsUpright(int orientation, bool littleEndian)
    {
        // Stored 32x16: quadrants of 16x8, each a whole number of 8x8 blocks so colours stay clean.
        byte[] jpeg = WithApp1(ImageCodec.Encode(TestImages.Quadrants(32, 16), Jpeg95), OrientationTiff(orientation, littleEndian));
        var image = ImageCodec.Decode(jpeg);

        bool swapped = orientation >= 5;
        Assert.Equal(swapped ? (16, 32) : (32, 16), (image.Width, image.Height));
        Assert.Equal(new ImageInfo(ImageFormat.Jpeg, image.Width, image.Height, false), ImageCodec.Identify(jpeg));

        // Where the stored top-left (red) quadrant's corner ends up, per the TIFF definition of each value.
        int w = image.Width - 1, h = image.Height - 1;
        (int x, int y) red = orientation switch
        {
            1 => (0, 0),
            2 => (w, 0),
            3 => (w, h),
            5 => (0, 0),
            6 => (w, 0),
            7 => (w, h),
            8 => (0, h),
            _ => throw new ArgumentOutOfRangeException(nameof(orientation)),
        };
        AssertColour(image, red, 255, 0, 0);
        // Stored top-right (green): rotated 90 clockwise (6) it is bottom-right; counter-clockwise (8) top-left.
        (int x, int y) green = orientation switch
        {
            1 => (w, 0),
            2 => (0, 0),
            3 => (0, h),
            5 => (0, h),
            6 => (w, h),
            7 => (w, 0),
            8 => (0, 0),
            _ => throw new ArgumentOutOfRangeException(nameof(orientation)),
        };
        AssertColour(image, green, 0, 255, 0);

        var stored = ImageCodec.Decode(jpeg, new ImageDecodeOptions { ApplyExifOrientation = false });
        Assert.Equal((32, 16), (stored.Width, stored.Height));
        AssertColour(stored, (0, 0), 255, 0, 0);
    }

    [Fact]
    public void MalformedExifIsIgnored()
    {
        byte[] plain = ImageCodec.Encode(TestImages.Quadrants(32, 16), Jpeg95);
        byte[] tiff = OrientationTiff(6, littleEndian: true);
        BinaryPrimitives.WriteUInt32LittleEndian(tiff.AsSpan(4), 0xFFFFFF00); // IFD0 offset far past the end
        var image = ImageCodec.Decode(WithApp1(plain, tiff));
        Assert.Equal((32, 16), (image.Width, image.Height));
    }

    [Fact]
    public void ParametersTravelAsExifUserComment()
    {
        var image = TestImages.Gradient(16, 16, 3);
        image.Text[ImageCodec.ParametersKey] = "a castle, ünïcödé 城\nSteps: 20, Sampler: Euler a, CFG scale: 7.0";
        image.Text["other"] = "not carried by JPEG";
        byte[] jpeg = ImageCodec.Encode(image, Jpeg95);

        // The bytes A1111 (piexif) writes: big-endian TIFF, "UNICODE\0" then UTF-16BE.
        byte[] expected = [.. "UNICODE\0"u8, .. Encoding.BigEndianUnicode.GetBytes(image.Text[ImageCodec.ParametersKey])];
        Assert.True(jpeg.AsSpan().IndexOf(expected) > 0);
        Assert.True(jpeg.AsSpan().IndexOf("Exif\0\0MM\0*"u8) > 0);

        var decoded = ImageCodec.Decode(jpeg);
        Assert.Equal(new Dictionary<string, string> { [ImageCodec.ParametersKey] = image.Text[ImageCodec.ParametersKey] }, decoded.Text);
    }

    [Fact]
    public void LittleEndianAsciiUserCommentIsRead()
    {
        byte[] comment = [.. "ASCII\0\0\0"u8, .. "Steps: 5"u8];
        byte[] jpeg = WithApp1(ImageCodec.Encode(TestImages.Gradient(8, 8, 3), Jpeg95), UserCommentTiff(comment));
        Assert.Equal("Steps: 5", ImageCodec.Decode(jpeg).Text[ImageCodec.ParametersKey]);
    }

    [Fact]
    public void TruncatedFileIsReported()
    {
        byte[] jpeg = ImageCodec.Encode(TestImages.Noise(64, 64, 3, seed: 3), Jpeg95);
        using var folder = new TempFolder();
        foreach (int length in new[] { 3, 10, 100, jpeg.Length / 2, jpeg.Length - 2 })
        {
            string path = folder.File($"cut{length}.jpg");
            File.WriteAllBytes(path, jpeg[..length]);
            var error = Assert.Throws<ImageFormatException>(() => ImageCodec.Load(path));
            Assert.Contains(path, error.Message);
        }
    }

    [Fact]
    public void TruncatedFileDecodesWhenWarningsAreTolerated()
    {
        var image = TestImages.Noise(64, 64, 3, seed: 4);
        byte[] jpeg = ImageCodec.Encode(image, Jpeg95);
        var decoded = ImageCodec.Decode(jpeg[..(jpeg.Length / 2)], new ImageDecodeOptions { TolerateJpegWarnings = true });
        Assert.Equal((64, 64), (decoded.Width, decoded.Height));
        // The first rows were in the kept half; the last ones are libjpeg's grey fill.
        Assert.True(TestImages.MaxAbsDifference(Crop(image, 8), Crop(decoded, 8)) < 64);
        Assert.Equal([128, 128, 128], decoded.Pixel(63, 63).ToArray());
    }

    [Fact]
    public void GarbageAfterTheMarkerIsReported()
    {
        byte[] jpeg = [0xFF, 0xD8, 0xFF, .. new byte[200].Select((_, i) => (byte)(i * 13))];
        var error = Assert.Throws<ImageFormatException>(() => ImageCodec.Decode(jpeg, source: "noise.jpg"));
        Assert.Contains("noise.jpg", error.Message);
        Assert.Contains("libjpeg-turbo", error.Problem);
    }

    [Fact]
    public void CorruptScanDataIsReported()
    {
        byte[] jpeg = ImageCodec.Encode(TestImages.Noise(64, 64, 3, seed: 6), Jpeg95);
        int scan = jpeg.AsSpan().IndexOf([(byte)0xFF, (byte)0xDA]);
        for (int i = scan + 40; i < scan + 400; i += 3)
        {
            jpeg[i] = 0xFF; // markers where entropy-coded data should be
        }
        Assert.Throws<ImageFormatException>(() => ImageCodec.Decode(jpeg));
    }

    private static RgbImage Crop(RgbImage image, int rows) =>
        new(image.Width, rows, image.Channels, image.Pixels[..(image.Width * rows * image.Channels)]);

    private static void AssertColour(RgbImage image, (int X, int Y) at, int r, int g, int b)
    {
        var p = image.Pixel(at.X, at.Y).ToArray();
        // Solid 8x8-aligned blocks at quality 95 4:4:4 come back within a few levels (corner pixels included).
        Assert.True(Math.Abs(p[0] - r) <= 8 && Math.Abs(p[1] - g) <= 8 && Math.Abs(p[2] - b) <= 8,
            $"pixel ({at.X}, {at.Y}) is ({p[0]}, {p[1]}, {p[2]}), expected about ({r}, {g}, {b})");
    }

    /// <summary>A TIFF whose IFD0 holds only Orientation (SHORT, count 1), written by hand in either byte order.</summary>
    internal static byte[] OrientationTiff(int orientation, bool littleEndian)
    {
        var tiff = new byte[8 + 2 + 12 + 4];
        var writer = new Writer(tiff, littleEndian);
        tiff[0] = tiff[1] = (byte)(littleEndian ? 'I' : 'M');
        writer.U16(2, 42);
        writer.U32(4, 8);
        writer.U16(8, 1);
        writer.U16(10, 0x0112);
        writer.U16(12, 3);
        writer.U32(14, 1);
        writer.U16(18, (ushort)orientation); // a SHORT sits in the first two bytes of the value field
        return tiff;
    }

    /// <summary>A little-endian TIFF: IFD0 points at an Exif IFD holding UserComment.</summary>
    private static byte[] UserCommentTiff(byte[] comment)
    {
        var tiff = new byte[8 + 18 + 18 + comment.Length];
        var writer = new Writer(tiff, littleEndian: true);
        tiff[0] = tiff[1] = (byte)'I';
        writer.U16(2, 42);
        writer.U32(4, 8);
        writer.U16(8, 1);
        writer.U16(10, 0x8769);
        writer.U16(12, 4);
        writer.U32(14, 1);
        writer.U32(18, 26);
        writer.U16(26, 1);
        writer.U16(28, 0x9286);
        writer.U16(30, 7);
        writer.U32(32, (uint)comment.Length);
        writer.U32(36, 44);
        comment.CopyTo(tiff, 44);
        return tiff;
    }

    /// <summary>Inserts an APP1 Exif segment right after SOI.</summary>
    internal static byte[] WithApp1(byte[] jpeg, byte[] tiff)
    {
        var segment = new byte[4 + 6 + tiff.Length];
        segment[0] = 0xFF;
        segment[1] = 0xE1;
        BinaryPrimitives.WriteUInt16BigEndian(segment.AsSpan(2), (ushort)(segment.Length - 2));
        "Exif\0\0"u8.CopyTo(segment.AsSpan(4));
        tiff.CopyTo(segment, 10);
        return [.. jpeg[..2], .. segment, .. jpeg[2..]];
    }

    private readonly struct Writer(byte[] bytes, bool littleEndian)
    {
        public void U16(int at, ushort value)
        {
            if (littleEndian)
            {
                BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(at), value);
            }
            else
            {
                BinaryPrimitives.WriteUInt16BigEndian(bytes.AsSpan(at), value);
            }
        }

        public void U32(int at, uint value)
        {
            if (littleEndian)
            {
                BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(at), value);
            }
            else
            {
                BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(at), value);
            }
        }
    }
}
