using System.Buffers.Binary;
using System.Text;

namespace SdAppliance.Imaging;

/// <summary>
/// The two EXIF facts the appliance uses, read from (and written as) a TIFF structure: IFD0's Orientation
/// (tag 0x0112) and the Exif IFD's UserComment (tag 0x9286, where A1111 stores generation parameters in
/// JPEG and WebP files). Malformed EXIF is ignored rather than reported: it never stops an image loading.
/// </summary>
internal static class Exif
{
    internal const ushort OrientationTag = 0x0112;
    internal const ushort ExifIfdPointerTag = 0x8769;
    internal const ushort UserCommentTag = 0x9286;

    /// <summary>The "Exif\0\0" header that starts a JPEG APP1 Exif segment's payload.</summary>
    internal static ReadOnlySpan<byte> App1Header => "Exif\0\0"u8;

    private static ReadOnlySpan<byte> UnicodePrefix => "UNICODE\0"u8;
    private static ReadOnlySpan<byte> AsciiPrefix => "ASCII\0\0\0"u8;

    internal readonly record struct Info(int Orientation, string? UserComment);

    /// <summary>Reads a TIFF structure ("II*\0" or "MM\0*"); orientation 1 and no comment when absent or malformed.</summary>
    internal static Info Read(ReadOnlySpan<byte> tiff)
    {
        if (tiff.Length < 8)
        {
            return new Info(1, null);
        }
        bool little;
        if (tiff[0] == 'I' && tiff[1] == 'I')
        {
            little = true;
        }
        else if (tiff[0] == 'M' && tiff[1] == 'M')
        {
            little = false;
        }
        else
        {
            return new Info(1, null);
        }
        if (U16(tiff, 2, little) != 42)
        {
            return new Info(1, null);
        }

        int orientation = 1;
        uint exifIfd = 0;
        foreach (var entry in Entries(tiff, U32(tiff, 4, little), little))
        {
            if (entry.Tag == OrientationTag && entry.Type == 3 && entry.Count >= 1)
            {
                int value = U16(tiff, entry.ValueOffset, little);
                orientation = value is >= 1 and <= 8 ? value : 1;
            }
            else if (entry.Tag == ExifIfdPointerTag && entry.Type is 4 or 13 && entry.Count == 1)
            {
                exifIfd = U32(tiff, entry.ValueOffset, little);
            }
        }

        string? comment = null;
        if (exifIfd != 0)
        {
            foreach (var entry in Entries(tiff, exifIfd, little))
            {
                if (entry.Tag == UserCommentTag && entry.Type is 7 or 2)
                {
                    comment = DecodeUserComment(Slice(tiff, entry), little);
                }
            }
        }
        return new Info(orientation, comment);
    }

    /// <summary>
    /// A big-endian TIFF holding only an Exif IFD with UserComment as "UNICODE\0" + UTF-16BE: byte for byte
    /// what A1111 (through piexif) writes, and what its PNG Info tab decodes.
    /// </summary>
    internal static byte[] WriteUserComment(string comment)
    {
        byte[] text = Encoding.BigEndianUnicode.GetBytes(comment);
        const int ifd0 = 8, ifd0Size = 2 + 12 + 4, exifIfd = ifd0 + ifd0Size, exifIfdSize = 2 + 12 + 4;
        const int data = exifIfd + exifIfdSize;
        int commentLength = UnicodePrefix.Length + text.Length;
        var tiff = new byte[data + commentLength];
        var s = tiff.AsSpan();
        "MM\0*"u8.CopyTo(s);
        BinaryPrimitives.WriteUInt32BigEndian(s[4..], ifd0);

        BinaryPrimitives.WriteUInt16BigEndian(s[ifd0..], 1);
        WriteEntry(s[(ifd0 + 2)..], ExifIfdPointerTag, 4, 1, exifIfd);
        BinaryPrimitives.WriteUInt32BigEndian(s[(ifd0 + 14)..], 0);

        BinaryPrimitives.WriteUInt16BigEndian(s[exifIfd..], 1);
        WriteEntry(s[(exifIfd + 2)..], UserCommentTag, 7, (uint)commentLength, data);
        BinaryPrimitives.WriteUInt32BigEndian(s[(exifIfd + 14)..], 0);

        UnicodePrefix.CopyTo(s[data..]);
        text.CopyTo(s[(data + UnicodePrefix.Length)..]);
        return tiff;
    }

    /// <summary>
    /// Turns pixels stored under EXIF <paramref name="orientation"/> upright. Orientation n says where the
    /// stored row 0 / column 0 are shown (TIFF 6.0, tag 274): 2 mirror, 3 rotate 180, 4 flip, 5 transpose,
    /// 6 rotate 90 clockwise, 7 transverse, 8 rotate 90 counter-clockwise; 5 to 8 swap width and height.
    /// </summary>
    internal static RgbImage ApplyOrientation(RgbImage image, int orientation)
    {
        if (orientation is < 2 or > 8)
        {
            return image;
        }
        int w = image.Width, h = image.Height, c = image.Channels;
        bool swap = orientation >= 5;
        int outW = swap ? h : w, outH = swap ? w : h;
        var output = new byte[image.Pixels.Length];
        ReadOnlySpan<byte> src = image.Pixels;
        for (int dy = 0; dy < outH; dy++)
        {
            for (int dx = 0; dx < outW; dx++)
            {
                // The stored pixel that lands on displayed (dx, dy).
                (int sx, int sy) = orientation switch
                {
                    2 => (w - 1 - dx, dy),
                    3 => (w - 1 - dx, h - 1 - dy),
                    4 => (dx, h - 1 - dy),
                    5 => (dy, dx),
                    6 => (dy, h - 1 - dx),
                    7 => (w - 1 - dy, h - 1 - dx),
                    _ => (w - 1 - dy, dx),
                };
                src.Slice(((sy * w) + sx) * c, c).CopyTo(output.AsSpan(((dy * outW) + dx) * c, c));
            }
        }
        return image.WithPixels(outW, outH, c, output);
    }

    private readonly record struct Entry(ushort Tag, ushort Type, uint Count, int ValueOffset, uint RawValue);

    private static List<Entry> Entries(ReadOnlySpan<byte> tiff, uint ifdOffset, bool little)
    {
        var entries = new List<Entry>();
        if (ifdOffset < 8 || ifdOffset > tiff.Length - 2)
        {
            return entries;
        }
        int count = U16(tiff, (int)ifdOffset, little);
        for (int i = 0; i < count; i++)
        {
            int at = (int)ifdOffset + 2 + (i * 12);
            if (at + 12 > tiff.Length)
            {
                break;
            }
            entries.Add(new Entry(U16(tiff, at, little), U16(tiff, at + 2, little), U32(tiff, at + 4, little),
                at + 8, U32(tiff, at + 8, little)));
        }
        return entries;
    }

    // An entry's bytes: inline in the 4-byte value field when they fit, else at the offset it holds.
    private static ReadOnlySpan<byte> Slice(ReadOnlySpan<byte> tiff, Entry entry)
    {
        long length = entry.Count;
        long start = length <= 4 ? entry.ValueOffset : entry.RawValue;
        return start + length > tiff.Length ? [] : tiff.Slice((int)start, (int)length);
    }

    private static string? DecodeUserComment(ReadOnlySpan<byte> value, bool little)
    {
        if (value.Length < 8)
        {
            return null;
        }
        var body = value[8..];
        string? text;
        if (value.StartsWith(UnicodePrefix))
        {
            // EXIF leaves the UTF-16 byte order open; honour a BOM, else use the TIFF's (piexif writes MM + BE).
            if (body.Length >= 2 && body[0] == 0xFF && body[1] == 0xFE)
            {
                text = Encoding.Unicode.GetString(body[2..]);
            }
            else if (body.Length >= 2 && body[0] == 0xFE && body[1] == 0xFF)
            {
                text = Encoding.BigEndianUnicode.GetString(body[2..]);
            }
            else
            {
                text = (little ? Encoding.Unicode : Encoding.BigEndianUnicode).GetString(body);
            }
        }
        else if (value.StartsWith(AsciiPrefix) || value[..8].IndexOfAnyExcept((byte)0) < 0)
        {
            // The all-zero "undefined" code is in practice ASCII or UTF-8 text.
            text = Encoding.UTF8.GetString(body);
        }
        else
        {
            return null;
        }
        // Writers pad with NULs (or spaces) to a fixed field size.
        text = text.TrimEnd('\0', ' ');
        return text.Length == 0 ? null : text;
    }

    private static void WriteEntry(Span<byte> s, ushort tag, ushort type, uint count, int value)
    {
        BinaryPrimitives.WriteUInt16BigEndian(s, tag);
        BinaryPrimitives.WriteUInt16BigEndian(s[2..], type);
        BinaryPrimitives.WriteUInt32BigEndian(s[4..], count);
        BinaryPrimitives.WriteUInt32BigEndian(s[8..], (uint)value);
    }

    private static ushort U16(ReadOnlySpan<byte> s, int at, bool little)
    {
        if (at < 0 || at + 2 > s.Length)
        {
            return 0;
        }
        return little ? BinaryPrimitives.ReadUInt16LittleEndian(s[at..]) : BinaryPrimitives.ReadUInt16BigEndian(s[at..]);
    }

    private static uint U32(ReadOnlySpan<byte> s, int at, bool little)
    {
        if (at < 0 || at + 4 > s.Length)
        {
            return 0;
        }
        return little ? BinaryPrimitives.ReadUInt32LittleEndian(s[at..]) : BinaryPrimitives.ReadUInt32BigEndian(s[at..]);
    }
}
