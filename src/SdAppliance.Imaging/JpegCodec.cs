using System.Buffers.Binary;
using System.Runtime.InteropServices;
using SdAppliance.Imaging.Native;

namespace SdAppliance.Imaging;

/// <summary>JPEG through the TurboJPEG API of libjpeg-turbo; the APP1 Exif segment is read and written here.</summary>
internal static unsafe class JpegCodec
{
    internal static ImageInfo ReadInfo(ReadOnlySpan<byte> data, string? source)
    {
        IntPtr handle = TurboJpeg.tjInitDecompress();
        if (handle == IntPtr.Zero)
        {
            throw new ImageFormatException(source, $"TurboJPEG: {TurboJpeg.ErrorText(IntPtr.Zero)}");
        }
        try
        {
            return ReadHeader(handle, data, source);
        }
        finally
        {
            _ = TurboJpeg.tjDestroy(handle);
        }
    }

    internal static RgbImage Decode(ReadOnlySpan<byte> data, ImageDecodeOptions options, string? source)
    {
        IntPtr handle = TurboJpeg.tjInitDecompress();
        if (handle == IntPtr.Zero)
        {
            throw new ImageFormatException(source, $"TurboJPEG: {TurboJpeg.ErrorText(IntPtr.Zero)}");
        }
        try
        {
            var info = ReadHeader(handle, data, source);
            ImageCodec.CheckPixelLimit(info, options, source);
            var pixels = new byte[RgbImage.CheckedLength(info.Width, info.Height, 3)];
            fixed (byte* input = data)
            fixed (byte* output = pixels)
            {
                // Greyscale and YCbCr both come out as RGB; CMYK/YCCK fail here with TurboJPEG's message.
                if (TurboJpeg.tjDecompress2(handle, input, new CULong((nuint)data.Length), output,
                        info.Width, 0, info.Height, TurboJpeg.PixelFormatRgb, 0) != 0)
                {
                    bool warning = TurboJpeg.tjGetErrorCode(handle) == TurboJpeg.ErrorWarning;
                    if (!warning || !options.TolerateJpegWarnings)
                    {
                        throw new ImageFormatException(source, $"JPEG data is corrupt or truncated (libjpeg-turbo: {TurboJpeg.ErrorText(handle)})");
                    }
                }
            }
            var image = new RgbImage(info.Width, info.Height, 3, pixels);
            var exif = FindExif(data);
            if (exif.UserComment is { } comment)
            {
                image.Text[ImageCodec.ParametersKey] = comment;
            }
            return options.ApplyExifOrientation ? Exif.ApplyOrientation(image, exif.Orientation) : image;
        }
        finally
        {
            _ = TurboJpeg.tjDestroy(handle);
        }
    }

    internal static byte[] Encode(RgbImage image, ImageEncodeOptions options)
    {
        if (image.HasAlpha)
        {
            image = image.FlattenAlpha(options.Background);
        }
        IntPtr handle = TurboJpeg.tjInitCompress();
        if (handle == IntPtr.Zero)
        {
            throw new ImageFormatException(null, $"TurboJPEG: {TurboJpeg.ErrorText(IntPtr.Zero)}");
        }
        byte* jpeg = null;
        try
        {
            CULong size = default;
            fixed (byte* pixels = image.Pixels)
            {
                if (TurboJpeg.tjCompress2(handle, pixels, image.Width, 0, image.Height, TurboJpeg.PixelFormatRgb,
                        &jpeg, &size, (int)options.JpegSubsampling, options.Quality, 0) != 0)
                {
                    throw new ImageFormatException(null, $"libjpeg-turbo could not encode the image: {TurboJpeg.ErrorText(handle)}");
                }
            }
            var encoded = new ReadOnlySpan<byte>(jpeg, checked((int)size.Value)).ToArray();
            if (options.WriteText && image.Text.TryGetValue(ImageCodec.ParametersKey, out string? parameters))
            {
                encoded = InsertExif(encoded, Exif.WriteUserComment(parameters));
            }
            return encoded;
        }
        finally
        {
            if (jpeg != null)
            {
                TurboJpeg.tjFree(jpeg);
            }
            _ = TurboJpeg.tjDestroy(handle);
        }
    }

    /// <summary>The EXIF facts of the first APP1 Exif segment before the scan data (defaults when there is none).</summary>
    internal static Exif.Info FindExif(ReadOnlySpan<byte> data)
    {
        int at = 2;
        while (at + 4 <= data.Length && data[at] == 0xFF)
        {
            byte marker = data[at + 1];
            if (marker == 0xFF)
            {
                at++; // fill byte
                continue;
            }
            if (marker is 0xDA or 0xD9)
            {
                break; // start of scan / end of image: metadata segments come before
            }
            int length = BinaryPrimitives.ReadUInt16BigEndian(data[(at + 2)..]);
            if (length < 2 || at + 2 + length > data.Length)
            {
                break;
            }
            var payload = data.Slice(at + 4, length - 2);
            if (marker == 0xE1 && payload.StartsWith(Exif.App1Header))
            {
                return Exif.Read(payload[Exif.App1Header.Length..]);
            }
            at += 2 + length;
        }
        return new Exif.Info(1, null);
    }

    /// <summary>Inserts an APP1 Exif segment holding <paramref name="tiff"/> after SOI and the JFIF APP0 segment, if any.</summary>
    internal static byte[] InsertExif(byte[] jpeg, byte[] tiff)
    {
        int length = 2 + Exif.App1Header.Length + tiff.Length;
        if (length > ushort.MaxValue)
        {
            throw new ArgumentException($"the EXIF data ({tiff.Length} bytes) does not fit a JPEG APP1 segment (at most {ushort.MaxValue - 8} bytes)");
        }
        int insertAt = 2;
        // JFIF requires its APP0 right after SOI; EXIF readers accept APP1 after it.
        if (jpeg.Length > 6 && jpeg[2] == 0xFF && jpeg[3] == 0xE0)
        {
            insertAt = 4 + BinaryPrimitives.ReadUInt16BigEndian(jpeg.AsSpan(4));
        }
        var output = new byte[jpeg.Length + 2 + length];
        jpeg.AsSpan(0, insertAt).CopyTo(output);
        var segment = output.AsSpan(insertAt);
        segment[0] = 0xFF;
        segment[1] = 0xE1;
        BinaryPrimitives.WriteUInt16BigEndian(segment[2..], (ushort)length);
        Exif.App1Header.CopyTo(segment[4..]);
        tiff.CopyTo(segment[(4 + Exif.App1Header.Length)..]);
        jpeg.AsSpan(insertAt).CopyTo(output.AsSpan(insertAt + 2 + length));
        return output;
    }

    private static ImageInfo ReadHeader(IntPtr handle, ReadOnlySpan<byte> data, string? source)
    {
        int width, height, subsampling, colorspace;
        fixed (byte* input = data)
        {
            if (TurboJpeg.tjDecompressHeader3(handle, input, new CULong((nuint)data.Length), &width, &height, &subsampling, &colorspace) != 0)
            {
                throw new ImageFormatException(source, $"JPEG header is corrupt or truncated (libjpeg-turbo: {TurboJpeg.ErrorText(handle)})");
            }
        }
        // A buffer that ends before the frame header can come back as success with a 0x0 size.
        if (width <= 0 || height <= 0)
        {
            throw new ImageFormatException(source, "JPEG file is truncated or has no frame header");
        }
        if (colorspace is TurboJpeg.ColorspaceCmyk or TurboJpeg.ColorspaceYcck)
        {
            throw new ImageFormatException(source, "CMYK JPEGs are not supported; convert the image to RGB first");
        }
        return new ImageInfo(ImageFormat.Jpeg, width, height, HasAlpha: false);
    }
}
