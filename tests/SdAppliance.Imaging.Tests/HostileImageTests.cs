using System.Buffers.Binary;
using System.Runtime.InteropServices;
using SdAppliance.Formats;

namespace SdAppliance.Imaging.Tests;

/// <summary>
/// Image files made to exhaust or hang their reader: headers that claim billions of pixels over a few bytes
/// (decompression bombs), FIFOs and devices named like images, animated WebP. Each is refused as an
/// <see cref="ImageFormatException"/> naming the file, from the header, before any pixel buffer exists.
/// </summary>
public sealed class HostileImageTests : IDisposable
{
    private readonly string folder = Directory.CreateTempSubdirectory("sdappliance-images-").FullName;

    public void Dispose() => Directory.Delete(folder, recursive: true);

    [DllImport("libc", EntryPoint = "mkfifo", SetLastError = true)]
    private static extern int MkFifo(string path, uint mode);

    public static TheoryData<string, int, int> Bombs() => new()
    {
        { "png", 100_000, 100_000 },
        { "png", 8192, 8193 },
        { "png", 2_000_000, 64 },
        { "png", 1, int.MaxValue },
        { "jpeg", 65_000, 65_000 },
        { "jpeg", 8193, 8192 },
        { "jpeg", 65_500, 1100 },
        { "webp", 16_384, 16_384 },
        { "webp", 16_384, 4097 },
    };

    [Theory]
    [MemberData(nameof(Bombs))]
    public void BombIsRefusedFromItsHeaderBeforeAnyPixelBuffer(string format, int width, int height)
    {
        var path = Path.Combine(folder, $"bomb.{format}");
        File.WriteAllBytes(path, ImageBombs.Claiming(format, width, height));
        var before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<ImageFormatException>(() => ImageCodec.Load(path));
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(path, e.Subject);
        Assert.Equal($"{width}x{height} is {(long)width * height:N0} pixels, over the limit of {ImageDecodeOptions.DefaultMaxPixels:N0} (ImageDecodeOptions.MaxPixels)", e.Problem);
        // The file (a few hundred bytes) and the header are all that is read; the smallest bomb's pixels would take 200 MB.
        Assert.True(allocated < 1 << 20, $"{allocated} bytes allocated before the refusal");
    }

    [Fact]
    public void JpegOverLibjpegsMaximumSideIsRefusedByItsHeaderReader()
    {
        // libjpeg-turbo reads at most 65,500 pixels a side (JPEG_MAX_DIMENSION) and says so from the header.
        var e = Assert.Throws<ImageFormatException>(() => ImageCodec.Decode(ImageBombs.Claiming("jpeg", 65_535, 65_535), source: "big.jpg"));
        Assert.Equal("big.jpg", e.Subject);
        Assert.StartsWith("JPEG header is corrupt or truncated", e.Problem);
    }

    [Theory]
    [InlineData("png")]
    [InlineData("jpeg")]
    [InlineData("webp")]
    public void ALowerLimitRefusesAnOrdinaryImage(string format)
    {
        // The limit is the caller's: a service may accept far less than 8192 x 8192.
        var data = ImageBombs.Claiming(format, 64, 64);
        var e = Assert.Throws<ImageFormatException>(() => ImageCodec.Decode(data, new ImageDecodeOptions { MaxPixels = 4095 }, "small.img"));
        Assert.Equal("64x64 is 4,096 pixels, over the limit of 4,095 (ImageDecodeOptions.MaxPixels)", e.Problem);
    }

    [Theory]
    [InlineData("png", 0, 64)]
    [InlineData("png", 64, 0)]
    public void ZeroSizeHeaderIsRefused(string format, int width, int height)
    {
        var e = Assert.Throws<ImageFormatException>(() => ImageCodec.Identify(ImageBombs.Claiming(format, width, height), "zero.png"));
        Assert.Equal("zero.png", e.Subject);
        Assert.Equal($"PNG header gives an invalid size {width}x{height}", e.Problem);
    }

    [Fact]
    public void AnimatedWebPIsRefusedAsAnimated()
    {
        var path = Path.Combine(folder, "animated.webp");
        File.WriteAllBytes(path, ImageBombs.AnimatedWebP());
        foreach (var read in new Action[] { () => ImageCodec.Load(path), () => ImageCodec.Identify(path) })
        {
            var e = Assert.Throws<ImageFormatException>(read);
            Assert.Equal(path, e.Subject);
            Assert.StartsWith("animated images are not supported", e.Problem);
            Assert.DoesNotContain("corrupt", e.Problem);
        }
    }

    [Fact]
    public void FifoNamedLikeAnImageIsRefusedWithoutOpeningIt()
    {
        var path = Path.Combine(folder, "pipe.png");
        Assert.Equal(0, MkFifo(path, Convert.ToUInt32("644", 8)));
        var e = Assert.Throws<ImageFormatException>(() => ImageCodec.Load(path));
        Assert.Equal(path, e.Subject);
        Assert.Equal("is a FIFO (named pipe), not a regular file", e.Problem);
        Assert.Equal(e.Problem, Assert.Throws<ImageFormatException>(() => ImageCodec.Identify(path)).Problem);
    }

    [Fact]
    public void LinkToDevZeroNamedLikeAnImageIsRefused()
    {
        var path = Path.Combine(folder, "zero.jpg");
        File.CreateSymbolicLink(path, "/dev/zero");
        var e = Assert.Throws<ImageFormatException>(() => ImageCodec.Load(path));
        Assert.Equal("is a character device (such as /dev/zero), not a regular file", e.Problem);
    }

    [Fact]
    public void FolderNamedLikeAnImageIsRefused()
    {
        var path = Directory.CreateDirectory(Path.Combine(folder, "folder.png")).FullName;
        Assert.Equal("is a folder, not a file", Assert.Throws<ImageFormatException>(() => ImageCodec.Load(path)).Problem);
    }

    [Fact]
    public void LinkToARealImageIsRead()
    {
        var target = Path.Combine(folder, "real.png");
        File.WriteAllBytes(target, ImageBombs.Claiming("png", 8, 8));
        var link = Path.Combine(folder, "link.png");
        File.CreateSymbolicLink(link, target);
        Assert.Equal(8, ImageCodec.Load(link).Width);
        Assert.Null(FileKind.NotRegular(link));
    }
}

/// <summary>Small real image files whose headers are rewritten to claim another size, as decompression bombs do.</summary>
internal static class ImageBombs
{
    public static byte[] Claiming(string format, int width, int height) => format switch
    {
        "png" => Png(width, height),
        "jpeg" => Jpeg(width, height),
        _ => WebP(width, height),
    };

    // An 8x8 PNG whose IHDR says width x height (its IDAT would then be far too short).
    private static byte[] Png(int width, int height)
    {
        var png = ImageCodec.Encode(TestImages.Gradient(8, 8, 3));
        BinaryPrimitives.WriteInt32BigEndian(png.AsSpan(16), width);
        BinaryPrimitives.WriteInt32BigEndian(png.AsSpan(20), height);
        return png;
    }

    // An 8x8 JPEG whose SOF0 says width x height (16 bits each).
    private static byte[] Jpeg(int width, int height)
    {
        var jpeg = ImageCodec.Encode(TestImages.Gradient(8, 8, 3), new ImageEncodeOptions { Format = ImageFormat.Jpeg });
        for (var i = 2; i + 9 < jpeg.Length; i++)
        {
            if (jpeg[i] == 0xFF && jpeg[i + 1] == 0xC0)
            {
                BinaryPrimitives.WriteUInt16BigEndian(jpeg.AsSpan(i + 5), (ushort)height);
                BinaryPrimitives.WriteUInt16BigEndian(jpeg.AsSpan(i + 7), (ushort)width);
                return jpeg;
            }
        }
        throw new InvalidOperationException("no SOF0 marker");
    }

    // An 8x8 lossless WebP whose VP8L header says width x height (14 bits each, so at most 16384).
    private static byte[] WebP(int width, int height)
    {
        var webp = ImageCodec.Encode(TestImages.Gradient(8, 8, 3), new ImageEncodeOptions { Format = ImageFormat.WebP, Lossless = true });
        if (!webp.AsSpan(12, 4).SequenceEqual("VP8L"u8) || webp[20] != 0x2F)
            throw new InvalidOperationException("not a simple lossless WebP");
        var bits = BinaryPrimitives.ReadUInt32LittleEndian(webp.AsSpan(21));
        bits = (bits & 0xF000_0000u) | (uint)(width - 1) | ((uint)(height - 1) << 14);
        BinaryPrimitives.WriteUInt32LittleEndian(webp.AsSpan(21), bits);
        return webp;
    }

    /// <summary>An animated WebP of one 8x8 frame, laid out as the container spec says: VP8X (animation flag), ANIM, ANMF.</summary>
    public static byte[] AnimatedWebP()
    {
        var still = ImageCodec.Encode(TestImages.Gradient(8, 8, 3), new ImageEncodeOptions { Format = ImageFormat.WebP, Lossless = true });
        var frame = still.AsSpan(12).ToArray();
        using var stream = new MemoryStream();
        stream.Write("RIFF\0\0\0\0WEBP"u8);
        Chunk(stream, "VP8X"u8, [0x02, 0, 0, 0, 7, 0, 0, 7, 0, 0]);
        Chunk(stream, "ANIM"u8, [0, 0, 0, 0, 0, 0]);
        // Frame position (0, 0), size 8x8, 100 ms, then the frame's own bitstream chunk.
        Chunk(stream, "ANMF"u8, [0, 0, 0, 0, 0, 0, 7, 0, 0, 7, 0, 0, 100, 0, 0, 0, .. frame]);
        var file = stream.ToArray();
        BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(4), (uint)(file.Length - 8));
        return file;
    }

    private static void Chunk(Stream stream, ReadOnlySpan<byte> type, byte[] body)
    {
        stream.Write(type);
        Span<byte> size = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(size, (uint)body.Length);
        stream.Write(size);
        stream.Write(body);
        if (body.Length % 2 == 1)
            stream.WriteByte(0);
    }
}
