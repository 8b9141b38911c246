namespace SdAppliance.Imaging;

/// <summary>An 8-bit sRGB colour, used as the background that alpha is flattened onto.</summary>
public readonly record struct Rgb(byte R, byte G, byte B)
{
    public static Rgb White => new(255, 255, 255);

    public static Rgb Black => new(0, 0, 0);
}

/// <summary>
/// An 8-bit image in memory: <see cref="Pixels"/> holds <see cref="Height"/> rows of <see cref="Width"/>
/// pixels, each <see cref="Channels"/> bytes (3 = RGB, 4 = RGBA, alpha not premultiplied), row-major HWC
/// with no padding: the layout of a PIL/numpy uint8 image. <see cref="Text"/> carries textual metadata
/// (PNG tEXt/zTXt/iTXt chunks; for JPEG and WebP the EXIF UserComment as <c>parameters</c>).
/// </summary>
public sealed class RgbImage
{
    /// <summary>Creates a black (and, for 4 channels, transparent) image.</summary>
    public RgbImage(int width, int height, int channels)
        : this(width, height, channels, new byte[CheckedLength(width, height, channels)])
    {
    }

    /// <summary>Wraps <paramref name="pixels"/> (not copied), which must hold exactly width*height*channels bytes.</summary>
    public RgbImage(int width, int height, int channels, byte[] pixels)
    {
        ArgumentNullException.ThrowIfNull(pixels);
        long length = CheckedLength(width, height, channels);
        if (pixels.Length != length)
        {
            throw new ArgumentException(
                $"a {width}x{height}x{channels} image needs {length} bytes, got {pixels.Length}", nameof(pixels));
        }
        Width = width;
        Height = height;
        Channels = channels;
        Pixels = pixels;
    }

    public int Width { get; }

    public int Height { get; }

    /// <summary>3 (RGB) or 4 (RGBA).</summary>
    public int Channels { get; }

    public bool HasAlpha => Channels == 4;

    /// <summary>Row-major HWC bytes; the image owns this array and callers may write into it.</summary>
    public byte[] Pixels { get; }

    /// <summary>Textual metadata by key, in insertion order (the order PNG chunks are written in).</summary>
    public Dictionary<string, string> Text { get; } = new(StringComparer.Ordinal);

    /// <summary>The bytes of pixel (x, y): 3 or 4 of them.</summary>
    public Span<byte> Pixel(int x, int y)
    {
        if ((uint)x >= (uint)Width || (uint)y >= (uint)Height)
        {
            throw new ArgumentOutOfRangeException(nameof(x), $"pixel ({x}, {y}) is outside the {Width}x{Height} image");
        }
        return Pixels.AsSpan(((y * Width) + x) * Channels, Channels);
    }

    /// <summary>A deep copy, metadata included.</summary>
    public RgbImage Clone() => WithPixels(Width, Height, Channels, (byte[])Pixels.Clone());

    /// <summary>
    /// An RGB copy with alpha composited onto <paramref name="background"/> (white when not given):
    /// c*a + bg*(1-a) on the 8-bit sRGB values, rounded to nearest, as image editors flatten; an RGB image is copied.
    /// </summary>
    public RgbImage FlattenAlpha(Rgb? background = null)
    {
        if (!HasAlpha)
        {
            return Clone();
        }
        Rgb bg = background ?? Rgb.White;
        // Width*Height*4 fits an array (checked at construction), so int indices are safe.
        int count = Width * Height;
        var rgb = new byte[count * 3];
        ReadOnlySpan<byte> src = Pixels;
        for (int i = 0; i < count; i++)
        {
            int s = i * 4, d = i * 3, a = src[s + 3];
            rgb[d] = Blend(src[s], bg.R, a);
            rgb[d + 1] = Blend(src[s + 1], bg.G, a);
            rgb[d + 2] = Blend(src[s + 2], bg.B, a);
        }
        return WithPixels(Width, Height, 3, rgb);
    }

    /// <summary>An RGBA copy (opaque alpha added to an RGB image); an RGBA image is copied.</summary>
    public RgbImage ToRgba()
    {
        if (HasAlpha)
        {
            return Clone();
        }
        int count = Width * Height;
        var rgba = new byte[CheckedLength(Width, Height, 4)];
        for (int i = 0; i < count; i++)
        {
            rgba[i * 4] = Pixels[i * 3];
            rgba[(i * 4) + 1] = Pixels[(i * 3) + 1];
            rgba[(i * 4) + 2] = Pixels[(i * 3) + 2];
            rgba[(i * 4) + 3] = 255;
        }
        return WithPixels(Width, Height, 4, rgba);
    }

    internal RgbImage WithPixels(int width, int height, int channels, byte[] pixels)
    {
        var image = new RgbImage(width, height, channels, pixels);
        foreach (var (key, value) in Text)
        {
            image.Text[key] = value;
        }
        return image;
    }

    // (c*a + bg*(255-a)) / 255 rounded to nearest; exact for a = 0 and a = 255.
    private static byte Blend(int c, int bg, int a) => (byte)((((c * a) + (bg * (255 - a))) * 2 + 255) / 510);

    internal static long CheckedLength(int width, int height, int channels)
    {
        if (width <= 0 || height <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(width), $"image size {width}x{height} must be positive");
        }
        if (channels is not (3 or 4))
        {
            throw new ArgumentOutOfRangeException(nameof(channels), $"channels must be 3 (RGB) or 4 (RGBA), got {channels}");
        }
        long length = (long)width * height * channels;
        if (length > Array.MaxLength)
        {
            throw new ArgumentOutOfRangeException(nameof(width), $"a {width}x{height}x{channels} image does not fit in one array");
        }
        return length;
    }
}
