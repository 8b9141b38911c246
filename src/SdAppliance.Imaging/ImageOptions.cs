namespace SdAppliance.Imaging;

/// <summary>The file formats the codecs read and write.</summary>
public enum ImageFormat
{
    Png,
    Jpeg,
    WebP,
}

/// <summary>Which channel layout a decoded image gets.</summary>
public enum ChannelMode
{
    /// <summary>RGBA when the file has an alpha channel (or transparency), RGB otherwise.</summary>
    Auto,

    /// <summary>Always RGB: alpha is flattened onto <see cref="ImageDecodeOptions.Background"/>.</summary>
    Rgb,

    /// <summary>Always RGBA: images without alpha get an opaque one.</summary>
    Rgba,
}

/// <summary>JPEG chroma subsampling (TurboJPEG's TJSAMP_444/422/420).</summary>
public enum JpegSubsampling
{
    Yuv444 = 0,
    Yuv422 = 1,
    Yuv420 = 2,
}

/// <summary>How to decode.</summary>
public sealed record ImageDecodeOptions
{
    /// <summary>8192 x 8192: above any training or generation size, far below what would exhaust memory.</summary>
    public const long DefaultMaxPixels = 8192L * 8192;

    public static ImageDecodeOptions Default { get; } = new();

    /// <summary>Images whose header claims more than this many pixels are refused before any pixel buffer is allocated.</summary>
    public long MaxPixels { get; init; } = DefaultMaxPixels;

    public ChannelMode Channels { get; init; } = ChannelMode.Auto;

    /// <summary>The colour alpha is flattened onto when <see cref="Channels"/> is <see cref="ChannelMode.Rgb"/>.</summary>
    public Rgb Background { get; init; } = Rgb.White;

    /// <summary>Turn JPEG/WebP pixels upright as their EXIF Orientation tag says (as cameras and browsers expect).</summary>
    public bool ApplyExifOrientation { get; init; } = true;

    /// <summary>
    /// Accept a JPEG that libjpeg-turbo decoded with only a warning (for example stray bytes before a marker).
    /// Off by default because a truncated JPEG is also only a warning: its missing part comes back grey.
    /// </summary>
    public bool TolerateJpegWarnings { get; init; }
}

/// <summary>How to encode.</summary>
public sealed record ImageEncodeOptions
{
    public static ImageEncodeOptions Png { get; } = new() { Format = ImageFormat.Png };

    public ImageFormat Format { get; init; } = ImageFormat.Png;

    /// <summary>JPEG and lossy WebP quality, 1 to 100 (ignored for PNG and lossless WebP).</summary>
    public int Quality { get; init; } = 90;

    /// <summary>WebP only: lossless instead of lossy.</summary>
    public bool Lossless { get; init; }

    public JpegSubsampling JpegSubsampling { get; init; } = JpegSubsampling.Yuv420;

    /// <summary>JPEG has no alpha: an RGBA image is flattened onto this colour first.</summary>
    public Rgb Background { get; init; } = Rgb.White;

    /// <summary>
    /// Write <see cref="RgbImage.Text"/>: every entry as a PNG text chunk; for JPEG and WebP only the
    /// <c>parameters</c> entry, as EXIF UserComment (where A1111 puts it).
    /// </summary>
    public bool WriteText { get; init; } = true;
}
