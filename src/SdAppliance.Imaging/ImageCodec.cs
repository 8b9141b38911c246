using SdAppliance.Formats;

namespace SdAppliance.Imaging;

/// <summary>What a file's header says, read without decoding pixels.</summary>
public sealed record ImageInfo(ImageFormat Format, int Width, int Height, bool HasAlpha)
{
    public long PixelCount => (long)Width * Height;
}

/// <summary>
/// Decodes and encodes PNG, JPEG and WebP. The format of input is told by its first bytes, never by the
/// file name; the output format of <see cref="Save"/> comes from the options or else the file extension.
/// Every failure to read an image is an <see cref="ImageFormatException"/> naming the file.
/// </summary>
public static class ImageCodec
{
    /// <summary>The text key of A1111's generation parameters (PNG chunk keyword; EXIF UserComment in JPEG/WebP).</summary>
    public const string ParametersKey = "parameters";

    /// <summary>The format that <paramref name="data"/> starts like, or null for anything else.</summary>
    public static ImageFormat? DetectFormat(ReadOnlySpan<byte> data)
    {
        if (data.StartsWith(PngCodec.Signature))
        {
            return ImageFormat.Png;
        }
        // SOI followed by the first marker's 0xFF.
        if (data.Length >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF)
        {
            return ImageFormat.Jpeg;
        }
        if (data.Length >= 12 && data[..4].SequenceEqual("RIFF"u8) && data[8..12].SequenceEqual("WEBP"u8))
        {
            return ImageFormat.WebP;
        }
        return null;
    }

    /// <summary>Format, upright size and alpha from the header alone.</summary>
    public static ImageInfo Identify(ReadOnlySpan<byte> data, string? source = null)
    {
        try
        {
            return IdentifyCore(data, source);
        }
        catch (DllNotFoundException e)
        {
            throw Explain(e);
        }
    }

    /// <summary>Format, upright size and alpha of the file at <paramref name="path"/>, from its header alone.</summary>
    public static ImageInfo Identify(string path) => Identify(ReadFile(path), path);

    /// <summary>Decodes an image from memory; <paramref name="source"/> names it in errors.</summary>
    public static RgbImage Decode(ReadOnlySpan<byte> data, ImageDecodeOptions? options = null, string? source = null)
    {
        try
        {
            return DecodeCore(data, options ?? ImageDecodeOptions.Default, source);
        }
        catch (DllNotFoundException e)
        {
            throw Explain(e);
        }
    }

    /// <summary>Decodes the image file at <paramref name="path"/>.</summary>
    public static RgbImage Load(string path, ImageDecodeOptions? options = null) => Decode(ReadFile(path), options, path);

    /// <summary>Encodes <paramref name="image"/> (PNG unless the options say otherwise).</summary>
    public static byte[] Encode(RgbImage image, ImageEncodeOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(image);
        options ??= ImageEncodeOptions.Png;
        if (options.Quality is < 1 or > 100)
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"quality must be 1 to 100, got {options.Quality}");
        }
        try
        {
            return options.Format switch
            {
                ImageFormat.Png => PngCodec.Encode(image, options),
                ImageFormat.Jpeg => JpegCodec.Encode(image, options),
                ImageFormat.WebP => WebPCodec.Encode(image, options),
                _ => throw new ArgumentOutOfRangeException(nameof(options), $"unknown image format {options.Format}"),
            };
        }
        catch (DllNotFoundException e)
        {
            throw Explain(e);
        }
    }

    /// <summary>
    /// Writes <paramref name="image"/> to <paramref name="path"/> atomically (<see cref="AtomicFile"/>), so a
    /// reader never sees half an image. Without options the format follows the extension (.png, .jpg/.jpeg, .webp).
    /// </summary>
    public static void Save(RgbImage image, string path, ImageEncodeOptions? options = null)
    {
        options ??= new ImageEncodeOptions { Format = FormatFromExtension(path) };
        byte[] encoded = Encode(image, options);
        AtomicFile.WriteAllBytes(path, encoded);
    }

    /// <summary>The format an extension names; <see cref="ArgumentException"/> for any other.</summary>
    public static ImageFormat FormatFromExtension(string path) => Path.GetExtension(path).ToLowerInvariant() switch
    {
        ".png" => ImageFormat.Png,
        ".jpg" or ".jpeg" => ImageFormat.Jpeg,
        ".webp" => ImageFormat.WebP,
        var other => throw new UserInputException(path, $"cannot tell an image format from the extension '{other}'", "use .png, .jpg, .jpeg or .webp"),
    };

    internal static void CheckPixelLimit(ImageInfo info, ImageDecodeOptions options, string? source)
    {
        if (info.Width <= 0 || info.Height <= 0)
        {
            throw new ImageFormatException(source, $"{info.Format} header gives an invalid size {info.Width}x{info.Height}");
        }
        if (info.PixelCount > options.MaxPixels)
        {
            throw new ImageFormatException(source,
                $"{info.Width}x{info.Height} is {info.PixelCount:N0} pixels, over the limit of {options.MaxPixels:N0} (ImageDecodeOptions.MaxPixels)");
        }
        if (info.PixelCount * 4 > Array.MaxLength)
        {
            throw new ImageFormatException(source, $"{info.Width}x{info.Height} is too large to hold in memory");
        }
    }

    private static ImageInfo IdentifyCore(ReadOnlySpan<byte> data, string? source)
    {
        var info = DetectOrThrow(data, source) switch
        {
            ImageFormat.Png => PngCodec.ReadInfo(data, source),
            ImageFormat.Jpeg => JpegCodec.ReadInfo(data, source),
            _ => WebPCodec.ReadInfo(data, source),
        };
        int orientation = info.Format switch
        {
            ImageFormat.Jpeg => JpegCodec.FindExif(data).Orientation,
            ImageFormat.WebP => WebPCodec.FindExif(data).Orientation,
            _ => 1,
        };
        return orientation >= 5 ? info with { Width = info.Height, Height = info.Width } : info;
    }

    private static RgbImage DecodeCore(ReadOnlySpan<byte> data, ImageDecodeOptions options, string? source)
    {
        var image = DetectOrThrow(data, source) switch
        {
            ImageFormat.Png => PngCodec.Decode(data, options, source),
            ImageFormat.Jpeg => JpegCodec.Decode(data, options, source),
            _ => WebPCodec.Decode(data, options, source),
        };
        return options.Channels switch
        {
            ChannelMode.Rgb when image.HasAlpha => image.FlattenAlpha(options.Background),
            ChannelMode.Rgba when !image.HasAlpha => image.ToRgba(),
            _ => image,
        };
    }

    private static ImageFormat DetectOrThrow(ReadOnlySpan<byte> data, string? source)
    {
        if (data.IsEmpty)
        {
            throw new ImageFormatException(source, "the file is empty");
        }
        if (DetectFormat(data) is { } format)
        {
            return format;
        }
        string start = Convert.ToHexString(data[..Math.Min(8, data.Length)]);
        throw new ImageFormatException(source, $"not a PNG, JPEG or WebP image (it starts with bytes {start})");
    }

    private static byte[] ReadFile(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        // Opening a FIFO named like an image would block, reading a link to /dev/zero would never end.
        if (FileKind.NotRegular(path) is { } kind)
        {
            throw new ImageFormatException(path, kind);
        }
        return File.ReadAllBytes(path);
    }

    // A missing system library is a setup problem, not a bad image: say which Debian package provides it.
    private static DllNotFoundException Explain(DllNotFoundException e) => new(
        $"{e.Message} (the image codecs need the Debian packages libturbojpeg0, libpng16-16 and libwebp7; scripts/bootstrap.sh installs them)", e);
}
