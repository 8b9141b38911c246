using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace SdAppliance.Imaging.Tests;

public class PngTests
{
    [Theory]
    [InlineData(3)]
    [InlineData(4)]
    public void RoundTripIsExact(int channels)
    {
        // Odd sizes catch a row stride that assumes padding; noise catches any reordered byte.
        var image = TestImages.Noise(37, 23, channels, seed: channels);
        byte[] png = ImageCodec.Encode(image);
        Assert.Equal(ImageFormat.Png, ImageCodec.DetectFormat(png));
        var decoded = ImageCodec.Decode(png);
        Assert.Equal((37, 23, channels), (decoded.Width, decoded.Height, decoded.Channels));
        Assert.Equal(image.Pixels, decoded.Pixels);
    }

    [Fact]
    public void OtherEncodersPngDecodesToTheFixturePixels()
    {
        var image = ImageCodec.Load(Path.Combine(AppContext.BaseDirectory, "Fixtures", "pipelines", "p1_pndm.png"));
        Assert.Equal((64, 64, 3), (image.Width, image.Height, image.Channels));
        // Pixels and SHA-256 of image_uint8[0] in p1_pndm.safetensors (NHWC uint8), read out with python3.
        Assert.Equal([129, 125, 143], image.Pixel(0, 0).ToArray());
        Assert.Equal([164, 98, 125], image.Pixel(63, 0).ToArray());
        Assert.Equal([144, 135, 132], image.Pixel(0, 63).ToArray());
        Assert.Equal([140, 138, 128], image.Pixel(63, 63).ToArray());
        Assert.Equal([192, 129, 185], image.Pixel(32, 32).ToArray());
        Assert.Equal([90, 48, 148], image.Pixel(10, 50).ToArray());
        Assert.Equal([225, 90, 143], image.Pixel(50, 10).ToArray());
        Assert.Equal("7f6bfbc77e830b8c93f3e57cbe2daa9dc1eb2d43ac1d25972200a9bbcb10d617", Convert.ToHexStringLower(SHA256.HashData(image.Pixels)));
    }

    [Fact]
    public void TextRoundTripsAsTextAndInternationalTextChunks()
    {
        var image = TestImages.Gradient(8, 8, 3);
        image.Text["parameters"] = "a cat, (masterpiece:1.2)\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, CFG scale: 7.0";
        image.Text["Comment"] = "café";
        image.Text["Title"] = "猫の写真 — 😺";
        byte[] png = ImageCodec.Encode(image);

        var chunks = ChunkTypes(png);
        Assert.Equal("IHDR", chunks[0]);
        // Latin-1 values stay tEXt (A1111 writes its parameters so); the others need iTXt's UTF-8.
        Assert.Equal(2, chunks.Count(t => t == "tEXt"));
        Assert.Equal(1, chunks.Count(t => t == "iTXt"));
        Assert.True(chunks.IndexOf("tEXt") < chunks.IndexOf("IDAT"));

        var decoded = ImageCodec.Decode(png);
        Assert.Equal(image.Text, decoded.Text);
        Assert.Equal(image.Pixels, decoded.Pixels);
    }

    [Fact]
    public void ReadsCompressedTextChunks()
    {
        byte[] rows = new byte[2 * 2 * 3];
        byte[] zTxt = [.. "Description"u8, 0, 0, .. TestImages.Deflate(Encoding.Latin1.GetBytes("zipped Latin-1: ñ"))];
        byte[] iTxt = [.. "Author"u8, 0, 1, 0, .. "ja"u8, 0, .. Encoding.UTF8.GetBytes("著者"), 0, .. TestImages.Deflate(Encoding.UTF8.GetBytes("山田 太郎"))];
        byte[] png = TestImages.Png(TestImages.Ihdr(2, 2, 8, 2), TestImages.Chunk("zTXt", zTxt), TestImages.Chunk("iTXt", iTxt), TestImages.Idat(6, rows));
        var image = ImageCodec.Decode(png);
        Assert.Equal("zipped Latin-1: ñ", image.Text["Description"]);
        Assert.Equal("山田 太郎", image.Text["Author"]);
    }

    [Fact]
    public void TextChunkWithBadCrcIsSkipped()
    {
        byte[] bad = TestImages.Chunk("tEXt", [.. "Broken"u8, 0, .. "value"u8]);
        bad[^1] ^= 0xFF;
        byte[] png = TestImages.Png(TestImages.Ihdr(1, 1, 8, 2), bad, TestImages.Chunk("tEXt", [.. "Good"u8, 0, .. "yes"u8]), TestImages.Idat(3, [1, 2, 3]));
        var image = ImageCodec.Decode(png);
        Assert.Equal([1, 2, 3], image.Pixels);
        Assert.Equal(["Good"], image.Text.Keys);
    }

    [Fact]
    public void InvalidKeywordIsRefused()
    {
        var image = TestImages.Gradient(2, 2, 3);
        image.Text[" leading space"] = "x";
        Assert.Throws<ArgumentException>(() => ImageCodec.Encode(image));
    }

    [Fact]
    public void SixteenBitSamplesAreScaledNotGammaEncoded()
    {
        // One 16-bit RGB pixel with no gAMA/sRGB chunk. Taken as sRGB-encoded (as PIL and browsers do) it
        // scales to value/257; libpng's default would take it as linear light and brighten it (0xABCD -> 213).
        byte[] row = [0xAB, 0xCD, 0x00, 0x00, 0xFF, 0xFF];
        byte[] png = TestImages.Png(TestImages.Ihdr(1, 1, 16, 2), TestImages.Idat(6, row));
        var image = ImageCodec.Decode(png);
        Assert.Equal([(byte)Math.Round(0xABCD / 257.0), 0, 255], image.Pixels);
    }

    [Fact]
    public void PaletteWithTransparencyDecodesToRgba()
    {
        byte[] plte = [255, 0, 0, 0, 0, 255];
        byte[] trns = [128]; // entry 0 half transparent, entry 1 opaque (entries past the table are)
        byte[] png = TestImages.Png(TestImages.Ihdr(2, 1, 8, 3), TestImages.Chunk("PLTE", plte), TestImages.Chunk("tRNS", trns), TestImages.Idat(2, [0, 1]));
        var info = ImageCodec.Identify(png);
        Assert.Equal(new ImageInfo(ImageFormat.Png, 2, 1, HasAlpha: true), info);
        var image = ImageCodec.Decode(png);
        Assert.Equal([255, 0, 0, 128, 0, 0, 255, 255], image.Pixels);
    }

    [Fact]
    public void HugeHeaderIsRefusedBeforeAnyAllocation()
    {
        // A valid 100000x100000 IHDR and nothing else: 3e10 bytes if anyone believed it.
        byte[] png = TestImages.Png(TestImages.Ihdr(100_000, 100_000, 8, 2));
        long before = GC.GetAllocatedBytesForCurrentThread();
        var error = Assert.Throws<ImageFormatException>(() => ImageCodec.Decode(png, source: "bomb.png"));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Contains("bomb.png", error.Message);
        Assert.Contains("100000x100000", error.Message);
        Assert.Contains("over the limit", error.Problem);
        Assert.True(allocated < 1 << 20, $"allocated {allocated} bytes");
    }

    [Fact]
    public void PixelLimitIsConfigurable()
    {
        byte[] png = ImageCodec.Encode(TestImages.Gradient(20, 10, 3));
        Assert.Throws<ImageFormatException>(() => ImageCodec.Decode(png, new ImageDecodeOptions { MaxPixels = 199 }));
        Assert.Equal(20, ImageCodec.Decode(png, new ImageDecodeOptions { MaxPixels = 200 }).Width);
    }

    [Fact]
    public void TruncatedFileIsReported()
    {
        byte[] png = ImageCodec.Encode(TestImages.Noise(32, 32, 3, seed: 1));
        using var folder = new TempFolder();
        foreach (int length in new[] { 8, 20, 40, png.Length / 2, png.Length - 12 })
        {
            string path = folder.File($"cut{length}.png");
            File.WriteAllBytes(path, png[..length]);
            var error = Assert.Throws<ImageFormatException>(() => ImageCodec.Load(path));
            Assert.Equal(path, error.FilePath);
            Assert.Contains(path, error.Message);
        }
    }

    [Fact]
    public void CorruptImageDataIsReported()
    {
        byte[] png = ImageCodec.Encode(TestImages.Noise(32, 32, 3, seed: 2));
        int idat = Encoding.ASCII.GetString(png).IndexOf("IDAT", StringComparison.Ordinal);
        for (int i = idat + 10; i < idat + 200; i++)
        {
            png[i] ^= 0x5A;
        }
        var error = Assert.Throws<ImageFormatException>(() => ImageCodec.Decode(png));
        Assert.StartsWith("libpng: ", error.Problem);
    }

    [Fact]
    public void GarbageAfterTheSignatureIsReported()
    {
        byte[] png = [.. PngCodec.Signature, .. new byte[100].Select((_, i) => (byte)(i * 37))];
        Assert.Throws<ImageFormatException>(() => ImageCodec.Decode(png));
    }

    private static List<string> ChunkTypes(byte[] png)
    {
        var types = new List<string>();
        for (int at = 8; at + 8 <= png.Length;)
        {
            int length = (int)BinaryPrimitives.ReadUInt32BigEndian(png.AsSpan(at));
            types.Add(Encoding.ASCII.GetString(png, at + 4, 4));
            at += 12 + length;
        }
        return types;
    }
}
