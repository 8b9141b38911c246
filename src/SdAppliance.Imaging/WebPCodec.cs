using System.Buffers.Binary;
using SdAppliance.Imaging.Native;

namespace SdAppliance.Imaging;

/// <summary>
/// WebP through libwebp's simple API. The RIFF container is walked here: for the alpha flag, and for the
/// EXIF chunk (orientation and A1111's UserComment), which encoding adds by wrapping the bitstream in VP8X.
/// </summary>
internal static unsafe class WebPCodec
{
    internal static ImageInfo ReadInfo(ReadOnlySpan<byte> data, string? source)
    {
        // libwebp's simple API decodes still images only; it would call an animation's frames corrupt.
        if (data.Length >= 21 && data.Slice(12, 4).SequenceEqual("VP8X"u8) && (data[20] & 0x02) != 0)
        {
            throw new ImageFormatException(source, "animated images are not supported (this is an animated WebP); save the frame you want as a still PNG, JPEG or WebP");
        }
        int width, height;
        fixed (byte* input = data)
        {
            if (LibWebP.WebPGetInfo(input, (nuint)data.Length, &width, &height) == 0)
            {
                throw new ImageFormatException(source, "WebP header is corrupt or truncated");
            }
        }
        return new ImageInfo(ImageFormat.WebP, width, height, HasAlpha(data));
    }

    internal static RgbImage Decode(ReadOnlySpan<byte> data, ImageDecodeOptions options, string? source)
    {
        var info = ReadInfo(data, source);
        ImageCodec.CheckPixelLimit(info, options, source);
        int channels = info.HasAlpha ? 4 : 3;
        int width, height;
        byte* decoded;
        fixed (byte* input = data)
        {
            decoded = info.HasAlpha
                ? LibWebP.WebPDecodeRGBA(input, (nuint)data.Length, &width, &height)
                : LibWebP.WebPDecodeRGB(input, (nuint)data.Length, &width, &height);
        }
        if (decoded == null)
        {
            throw new ImageFormatException(source, "WebP data is corrupt or truncated (libwebp could not decode it)");
        }
        RgbImage image;
        try
        {
            if (width != info.Width || height != info.Height)
            {
                throw new ImageFormatException(source, "libwebp decoded a different size from the one in the header");
            }
            long length = RgbImage.CheckedLength(width, height, channels);
            image = new RgbImage(width, height, channels, new ReadOnlySpan<byte>(decoded, (int)length).ToArray());
        }
        finally
        {
            LibWebP.WebPFree(decoded);
        }
        var exif = FindExif(data);
        if (exif.UserComment is { } comment)
        {
            image.Text[ImageCodec.ParametersKey] = comment;
        }
        return options.ApplyExifOrientation ? Exif.ApplyOrientation(image, exif.Orientation) : image;
    }

    internal static byte[] Encode(RgbImage image, ImageEncodeOptions options)
    {
        byte* output = null;
        nuint size;
        int stride = image.Width * image.Channels;
        fixed (byte* pixels = image.Pixels)
        {
            // The simple lossless API leaves 'exact' off: colours under alpha 0 may change (they are invisible).
            size = (options.Lossless, image.HasAlpha) switch
            {
                (true, true) => LibWebP.WebPEncodeLosslessRGBA(pixels, image.Width, image.Height, stride, &output),
                (true, false) => LibWebP.WebPEncodeLosslessRGB(pixels, image.Width, image.Height, stride, &output),
                (false, true) => LibWebP.WebPEncodeRGBA(pixels, image.Width, image.Height, stride, options.Quality, &output),
                (false, false) => LibWebP.WebPEncodeRGB(pixels, image.Width, image.Height, stride, options.Quality, &output),
            };
        }
        byte[] encoded;
        try
        {
            if (size == 0 || output == null)
            {
                // The simple API reports no reason; the usual one is a side over WebP's 16383-pixel limit.
                throw new ImageFormatException(null, $"libwebp could not encode the {image.Width}x{image.Height} image (WebP allows at most 16383 pixels a side)");
            }
            encoded = new ReadOnlySpan<byte>(output, checked((int)size)).ToArray();
        }
        finally
        {
            if (output != null)
            {
                LibWebP.WebPFree(output);
            }
        }
        if (options.WriteText && image.Text.TryGetValue(ImageCodec.ParametersKey, out string? parameters))
        {
            encoded = AddExif(encoded, Exif.WriteUserComment(parameters), image);
        }
        return encoded;
    }

    /// <summary>
    /// Returns the file with an EXIF chunk: a simple file (a lone VP8/VP8L chunk) is first wrapped in the
    /// extended format's VP8X header (WebP container spec), whose flags then announce EXIF (and alpha).
    /// </summary>
    internal static byte[] AddExif(byte[] webp, byte[] tiff, RgbImage image)
    {
        using var stream = new MemoryStream(webp.Length + tiff.Length + 64);
        stream.Write("RIFF\0\0\0\0WEBP"u8);
        var first = webp.AsSpan(12, 4);
        if (first.SequenceEqual("VP8X"u8))
        {
            stream.Write(webp, 12, webp.Length - 12);
            var flags = stream.GetBuffer();
            flags[20] |= 0x08;
        }
        else
        {
            Span<byte> vp8x = stackalloc byte[10];
            vp8x.Clear();
            // Flag bits (MSB first): reserved 2, ICC, alpha, EXIF, XMP, animation, reserved.
            vp8x[0] = (byte)(0x08 | (image.HasAlpha ? 0x10 : 0));
            WriteUInt24(vp8x[4..], image.Width - 1);
            WriteUInt24(vp8x[7..], image.Height - 1);
            WriteChunk(stream, "VP8X"u8, vp8x);
            stream.Write(webp, 12, webp.Length - 12);
        }
        WriteChunk(stream, "EXIF"u8, tiff);
        var result = stream.ToArray();
        BinaryPrimitives.WriteUInt32LittleEndian(result.AsSpan(4), (uint)(result.Length - 8));
        return result;
    }

    /// <summary>Whether the bitstream carries alpha: the VP8X alpha flag, or the VP8L header's alpha_is_used bit.</summary>
    private static bool HasAlpha(ReadOnlySpan<byte> data)
    {
        if (data.Length < 25)
        {
            return false;
        }
        var first = data.Slice(12, 4);
        if (first.SequenceEqual("VP8X"u8))
        {
            return (data[20] & 0x10) != 0;
        }
        if (first.SequenceEqual("VP8L"u8))
        {
            // After the 0x2F signature: 14 bits width-1, 14 bits height-1, then alpha_is_used.
            uint bits = BinaryPrimitives.ReadUInt32LittleEndian(data[21..]);
            return ((bits >> 28) & 1) != 0;
        }
        return false;
    }

    private static (int At, int Size)? FindChunk(ReadOnlySpan<byte> data, ReadOnlySpan<byte> wanted)
    {
        int at = 12;
        while (at + 8 <= data.Length)
        {
            uint size = BinaryPrimitives.ReadUInt32LittleEndian(data[(at + 4)..]);
            if (size > data.Length - at - 8)
            {
                return null;
            }
            if (data.Slice(at, 4).SequenceEqual(wanted))
            {
                return (at + 8, (int)size);
            }
            at += 8 + (int)size + (int)(size & 1);
        }
        return null;
    }

    /// <summary>The EXIF facts of the EXIF chunk (defaults when there is none).</summary>
    internal static Exif.Info FindExif(ReadOnlySpan<byte> data)
    {
        if (FindChunk(data, "EXIF"u8) is not var (at, size))
        {
            return new Exif.Info(1, null);
        }
        var chunk = data.Slice(at, size);
        // The container spec wants bare TIFF, but some writers keep JPEG's "Exif\0\0" prefix.
        return Exif.Read(chunk.StartsWith(Exif.App1Header) ? chunk[Exif.App1Header.Length..] : chunk);
    }

    private static void WriteChunk(Stream stream, ReadOnlySpan<byte> type, ReadOnlySpan<byte> body)
    {
        Span<byte> size = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(size, (uint)body.Length);
        stream.Write(type);
        stream.Write(size);
        stream.Write(body);
        if ((body.Length & 1) != 0)
        {
            stream.WriteByte(0);
        }
    }

    private static void WriteUInt24(Span<byte> s, int value)
    {
        s[0] = (byte)value;
        s[1] = (byte)(value >> 8);
        s[2] = (byte)(value >> 16);
    }
}
