using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using SdAppliance.Imaging.Native;

namespace SdAppliance.Imaging;

/// <summary>
/// PNG through libpng's simplified API for pixels; text chunks (which that API skips) are read and written
/// here, straight from and into the chunk stream.
/// </summary>
internal static unsafe class PngCodec
{
    internal static ReadOnlySpan<byte> Signature => [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A];

    // A zTXt/iTXt chunk that inflates past this is skipped: metadata must not become a decompression bomb.
    private const int MaxInflatedText = 8 << 20;

    internal static ImageInfo ReadInfo(ReadOnlySpan<byte> data, string? source)
    {
        // IHDR must come first (PNG spec 5.6): signature, length 13, "IHDR", width, height, depth, colour type.
        if (data.Length < 33 || !data[12..16].SequenceEqual("IHDR"u8) || BinaryPrimitives.ReadUInt32BigEndian(data[8..]) != 13)
        {
            throw new ImageFormatException(source, "PNG file is truncated or has no IHDR chunk at its start");
        }
        uint width = BinaryPrimitives.ReadUInt32BigEndian(data[16..]);
        uint height = BinaryPrimitives.ReadUInt32BigEndian(data[20..]);
        if (width == 0 || height == 0 || width > int.MaxValue || height > int.MaxValue)
        {
            throw new ImageFormatException(source, $"PNG header gives an invalid size {width}x{height}");
        }
        byte colourType = data[25];
        // Colour types 4 and 6 carry alpha; any type may get transparency from a tRNS chunk.
        bool alpha = colourType is 4 or 6 || HasChunkBeforeImageData(data, "tRNS"u8);
        return new ImageInfo(ImageFormat.Png, (int)width, (int)height, alpha);
    }

    internal static RgbImage Decode(ReadOnlySpan<byte> data, ImageDecodeOptions options, string? source)
    {
        var info = ReadInfo(data, source);
        ImageCodec.CheckPixelLimit(info, options, source);
        // libpng's simplified reader stops after the image data, so a file cut just before IEND would pass.
        if (!ReachesEnd(data))
        {
            throw new ImageFormatException(source, "PNG file is truncated (its chunks stop before IEND)");
        }

        var image = new LibPng.PngImage { Version = LibPng.ImageVersion };
        try
        {
            fixed (byte* input = data)
            {
                // libpng reads from this memory until finish_read, so both calls stay inside the pin.
                if (LibPng.png_image_begin_read_from_memory(&image, input, (nuint)data.Length) == 0)
                {
                    throw new ImageFormatException(source, $"libpng: {image.MessageText}");
                }
                if (image.Width != info.Width || image.Height != info.Height)
                {
                    throw new ImageFormatException(source, "libpng read a different size from the one in IHDR");
                }
                bool alpha = (image.Format & LibPng.FormatFlagAlpha) != 0;
                int channels = alpha ? 4 : 3;
                image.Format = alpha ? LibPng.FormatRgba : LibPng.FormatRgb;
                // A 16-bit file without gAMA/sRGB is sRGB-encoded in practice (PIL, browsers); libpng
                // would otherwise take it as linear light and gamma-encode it on the way to 8 bits.
                image.Flags |= LibPng.Flag16BitSrgb;
                var pixels = new byte[RgbImage.CheckedLength(info.Width, info.Height, channels)];
                fixed (byte* output = pixels)
                {
                    if (LibPng.png_image_finish_read(&image, null, output, 0, null) == 0)
                    {
                        throw new ImageFormatException(source, $"libpng: {image.MessageText}");
                    }
                }
                var result = new RgbImage(info.Width, info.Height, channels, pixels);
                ReadText(data, result.Text);
                return result;
            }
        }
        finally
        {
            LibPng.png_image_free(&image);
        }
    }

    internal static byte[] Encode(RgbImage image, ImageEncodeOptions options)
    {
        var png = new LibPng.PngImage
        {
            Version = LibPng.ImageVersion,
            Width = (uint)image.Width,
            Height = (uint)image.Height,
            Format = image.HasAlpha ? LibPng.FormatRgba : LibPng.FormatRgb,
        };
        // Deflate's worst case plus generous room for chunk headers; the retry below covers a miss.
        long raw = ((long)image.Width * image.Channels + 1) * image.Height;
        long capacity = raw + (raw / 8) + (raw / 64) + (12 * (raw / 8192)) + 4096;
        byte[] encoded;
        fixed (byte* pixels = image.Pixels)
        {
            while (true)
            {
                var buffer = new byte[capacity];
                nuint size = (nuint)buffer.Length;
                int ok;
                fixed (byte* output = buffer)
                {
                    ok = LibPng.png_image_write_to_memory(&png, output, &size, 0, pixels, 0, null);
                }
                if (ok != 0)
                {
                    encoded = buffer.AsSpan(0, (int)size).ToArray();
                    break;
                }
                LibPng.png_image_free(&png);
                // On a too-small buffer libpng reports the size it needs; otherwise it failed outright.
                if (size <= (nuint)capacity)
                {
                    throw new ImageFormatException(null, $"libpng could not encode the image: {png.MessageText}");
                }
                capacity = (long)size;
                png.WarningOrError = 0;
            }
        }
        LibPng.png_image_free(&png);
        return options.WriteText && image.Text.Count > 0 ? InsertText(encoded, image.Text) : encoded;
    }

    /// <summary>tEXt, zTXt and iTXt chunks into <paramref name="text"/>; chunks with a bad CRC or bad layout are skipped.</summary>
    internal static void ReadText(ReadOnlySpan<byte> data, Dictionary<string, string> text)
    {
        foreach (var (at, length) in Chunks(data))
        {
            var type = data.Slice(at + 4, 4);
            var body = data.Slice(at + 8, length);
            if (type.SequenceEqual("IEND"u8))
            {
                break;
            }
            KeyValuePair<string, string>? entry = null;
            if (type.SequenceEqual("tEXt"u8))
            {
                entry = ParseText(body);
            }
            else if (type.SequenceEqual("zTXt"u8))
            {
                entry = ParseCompressedText(body);
            }
            else if (type.SequenceEqual("iTXt"u8))
            {
                entry = ParseInternationalText(body);
            }
            if (entry is { } e)
            {
                text[e.Key] = e.Value;
            }
        }
    }

    /// <summary>
    /// Inserts one text chunk per entry right after IHDR, so readers that stop at the image data (PIL's
    /// <c>Image.open</c>, as in A1111's PNG Info) still see them: tEXt for Latin-1 values, iTXt (UTF-8) otherwise.
    /// </summary>
    internal static byte[] InsertText(byte[] png, IReadOnlyDictionary<string, string> text)
    {
        const int afterIhdr = 8 + 8 + 13 + 4;
        using var stream = new MemoryStream(png.Length + 256);
        stream.Write(png, 0, afterIhdr);
        foreach (var (key, value) in text)
        {
            byte[] keyword = Keyword(key);
            if (IsLatin1(value))
            {
                WriteChunk(stream, "tEXt"u8, [.. keyword, 0, .. Encoding.Latin1.GetBytes(value)]);
            }
            else
            {
                // Keyword, NUL, compression flag 0, method 0, empty language tag NUL, empty translated keyword NUL, UTF-8 text.
                WriteChunk(stream, "iTXt"u8, [.. keyword, 0, 0, 0, 0, 0, .. Encoding.UTF8.GetBytes(value)]);
            }
        }
        stream.Write(png, afterIhdr, png.Length - afterIhdr);
        return stream.ToArray();
    }

    internal static uint Crc32(ReadOnlySpan<byte> type, ReadOnlySpan<byte> body)
    {
        uint crc = 0xFFFFFFFFu;
        crc = Crc32Update(crc, type);
        crc = Crc32Update(crc, body);
        return crc ^ 0xFFFFFFFFu;
    }

    private static uint Crc32Update(uint crc, ReadOnlySpan<byte> bytes)
    {
        foreach (byte b in bytes)
        {
            crc = CrcTable[(int)((crc ^ b) & 0xFF)] ^ (crc >> 8);
        }
        return crc;
    }

    // The reflected CRC-32 of ISO 3309 / PNG spec annex D (polynomial 0xEDB88320).
    private static readonly uint[] CrcTable = BuildCrcTable();

    private static uint[] BuildCrcTable()
    {
        var table = new uint[256];
        for (uint n = 0; n < 256; n++)
        {
            uint c = n;
            for (int k = 0; k < 8; k++)
            {
                c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            }
            table[n] = c;
        }
        return table;
    }

    private static void WriteChunk(Stream stream, ReadOnlySpan<byte> type, ReadOnlySpan<byte> body)
    {
        Span<byte> word = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(word, (uint)body.Length);
        stream.Write(word);
        stream.Write(type);
        stream.Write(body);
        BinaryPrimitives.WriteUInt32BigEndian(word, Crc32(type, body));
        stream.Write(word);
    }

    private static byte[] Keyword(string key)
    {
        // PNG spec 11.3.4.2: 1-79 Latin-1 characters, no NUL, no leading/trailing/double spaces.
        if (key.Length is < 1 or > 79 || !IsLatin1(key) || key.Contains('\0') || key.StartsWith(' ') || key.EndsWith(' ') || key.Contains("  ", StringComparison.Ordinal))
        {
            throw new ArgumentException($"'{key}' is not a valid PNG text keyword (1-79 Latin-1 characters, no NUL, no leading, trailing or double spaces)");
        }
        return Encoding.Latin1.GetBytes(key);
    }

    private static bool IsLatin1(string s)
    {
        foreach (char c in s)
        {
            if (c is > '\u00FF' or '\0')
            {
                return false;
            }
        }
        return true;
    }

    private static KeyValuePair<string, string>? ParseText(ReadOnlySpan<byte> body)
    {
        int nul = body.IndexOf((byte)0);
        if (nul < 1)
        {
            return null;
        }
        return new(Encoding.Latin1.GetString(body[..nul]), Encoding.Latin1.GetString(body[(nul + 1)..]));
    }

    private static KeyValuePair<string, string>? ParseCompressedText(ReadOnlySpan<byte> body)
    {
        int nul = body.IndexOf((byte)0);
        if (nul < 1 || nul + 2 > body.Length || body[nul + 1] != 0)
        {
            return null;
        }
        byte[]? inflated = Inflate(body[(nul + 2)..]);
        return inflated is null ? null : new(Encoding.Latin1.GetString(body[..nul]), Encoding.Latin1.GetString(inflated));
    }

    private static KeyValuePair<string, string>? ParseInternationalText(ReadOnlySpan<byte> body)
    {
        int nul = body.IndexOf((byte)0);
        if (nul < 1 || nul + 3 > body.Length)
        {
            return null;
        }
        string key = Encoding.Latin1.GetString(body[..nul]);
        bool compressed = body[nul + 1] != 0;
        if (compressed && body[nul + 2] != 0)
        {
            return null;
        }
        var rest = body[(nul + 3)..];
        int language = rest.IndexOf((byte)0);
        if (language < 0)
        {
            return null;
        }
        rest = rest[(language + 1)..];
        int translated = rest.IndexOf((byte)0);
        if (translated < 0)
        {
            return null;
        }
        rest = rest[(translated + 1)..];
        if (!compressed)
        {
            return new(key, Encoding.UTF8.GetString(rest));
        }
        byte[]? inflated = Inflate(rest);
        return inflated is null ? null : new(key, Encoding.UTF8.GetString(inflated));
    }

    private static byte[]? Inflate(ReadOnlySpan<byte> compressed)
    {
        try
        {
            using var input = new MemoryStream(compressed.ToArray());
            using var zlib = new ZLibStream(input, CompressionMode.Decompress);
            using var output = new MemoryStream();
            var buffer = new byte[16384];
            int read;
            while ((read = zlib.Read(buffer)) > 0)
            {
                if (output.Length + read > MaxInflatedText)
                {
                    return null;
                }
                output.Write(buffer, 0, read);
            }
            return output.ToArray();
        }
        catch (InvalidDataException)
        {
            return null;
        }
    }

    private static bool HasChunkBeforeImageData(ReadOnlySpan<byte> data, ReadOnlySpan<byte> wanted)
    {
        foreach (var (at, _) in Chunks(data))
        {
            var type = data.Slice(at + 4, 4);
            if (type.SequenceEqual(wanted))
            {
                return true;
            }
            if (type.SequenceEqual("IDAT"u8))
            {
                return false;
            }
        }
        return false;
    }

    private static bool ReachesEnd(ReadOnlySpan<byte> data)
    {
        int at = 8;
        while (at + 12 <= data.Length)
        {
            uint length = BinaryPrimitives.ReadUInt32BigEndian(data[at..]);
            if (length > data.Length - at - 12)
            {
                return false;
            }
            if (data.Slice(at + 4, 4).SequenceEqual("IEND"u8))
            {
                return true;
            }
            at += 12 + (int)length;
        }
        return false;
    }

    /// <summary>
    /// Where each chunk after the signature starts (its length field) and its body length, for chunks whose
    /// CRC checks out (IDAT is not checked: libpng does that); stops at the first chunk that runs past the data.
    /// </summary>
    private static List<(int At, int Length)> Chunks(ReadOnlySpan<byte> data)
    {
        var chunks = new List<(int, int)>();
        int at = 8;
        while (at + 12 <= data.Length)
        {
            uint length = BinaryPrimitives.ReadUInt32BigEndian(data[at..]);
            if (length > data.Length - at - 12)
            {
                break;
            }
            var type = data.Slice(at + 4, 4);
            uint crc = BinaryPrimitives.ReadUInt32BigEndian(data[(at + 8 + (int)length)..]);
            if (type.SequenceEqual("IDAT"u8) || crc == Crc32(type, data.Slice(at + 8, (int)length)))
            {
                chunks.Add((at, (int)length));
            }
            at += 12 + (int)length;
        }
        return chunks;
    }
}
