using System.Buffers.Binary;
using System.IO.Compression;

namespace SdAppliance.Imaging.Tests;

/// <summary>Synthetic images and hand-built files for the codec tests.</summary>
internal static class TestImages
{
    /// <summary>Smooth horizontal/vertical ramps per channel (what lossy codecs reproduce well), alpha a third ramp.</summary>
    public static RgbImage Gradient(int width, int height, int channels)
    {
        var image = new RgbImage(width, height, channels);
        for (int y = 0; y < height; y++)
        {
            for (int x = 0; x < width; x++)
            {
                var p = image.Pixel(x, y);
                p[0] = (byte)(x * 255 / Math.Max(1, width - 1));
                p[1] = (byte)(y * 255 / Math.Max(1, height - 1));
                p[2] = (byte)((x + y) * 255 / Math.Max(1, width + height - 2));
                if (channels == 4)
                {
                    p[3] = (byte)(255 - (y * 255 / Math.Max(1, height - 1)));
                }
            }
        }
        return image;
    }

    /// <summary>Every byte drawn from a seeded generator: incompressible, and any misplaced byte shows.</summary>
    public static RgbImage Noise(int width, int height, int channels, int seed)
    {
        var image = new RgbImage(width, height, channels);
        new Random(seed).NextBytes(image.Pixels);
        return image;
    }

    /// <summary>Four solid quadrants: top-left red, top-right green, bottom-left blue, bottom-right white.</summary>
    public static RgbImage Quadrants(int width, int height)
    {
        var image = new RgbImage(width, height, 3);
        for (int y = 0; y < height; y++)
        {
            for (int x = 0; x < width; x++)
            {
                (byte r, byte g, byte b) = (x < width / 2, y < height / 2) switch
                {
                    (true, true) => ((byte)255, (byte)0, (byte)0),
                    (false, true) => ((byte)0, (byte)255, (byte)0),
                    (true, false) => ((byte)0, (byte)0, (byte)255),
                    _ => ((byte)255, (byte)255, (byte)255),
                };
                var p = image.Pixel(x, y);
                (p[0], p[1], p[2]) = (r, g, b);
            }
        }
        return image;
    }

    public static int MaxAbsDifference(RgbImage a, RgbImage b)
    {
        Assert.Equal((a.Width, a.Height, a.Channels), (b.Width, b.Height, b.Channels));
        int max = 0;
        for (int i = 0; i < a.Pixels.Length; i++)
        {
            max = Math.Max(max, Math.Abs(a.Pixels[i] - b.Pixels[i]));
        }
        return max;
    }

    public static double MeanAbsDifference(RgbImage a, RgbImage b)
    {
        Assert.Equal((a.Width, a.Height, a.Channels), (b.Width, b.Height, b.Channels));
        long sum = 0;
        for (int i = 0; i < a.Pixels.Length; i++)
        {
            sum += Math.Abs(a.Pixels[i] - b.Pixels[i]);
        }
        return (double)sum / a.Pixels.Length;
    }

    /// <summary>One PNG chunk: length, type, body, CRC.</summary>
    public static byte[] Chunk(string type, ReadOnlySpan<byte> body)
    {
        var chunk = new byte[12 + body.Length];
        BinaryPrimitives.WriteUInt32BigEndian(chunk, (uint)body.Length);
        System.Text.Encoding.ASCII.GetBytes(type).CopyTo(chunk, 4);
        body.CopyTo(chunk.AsSpan(8));
        BinaryPrimitives.WriteUInt32BigEndian(chunk.AsSpan(8 + body.Length), PngCodec.Crc32(chunk.AsSpan(4, 4), body));
        return chunk;
    }

    public static byte[] Ihdr(uint width, uint height, byte bitDepth, byte colourType)
    {
        var body = new byte[13];
        BinaryPrimitives.WriteUInt32BigEndian(body, width);
        BinaryPrimitives.WriteUInt32BigEndian(body.AsSpan(4), height);
        body[8] = bitDepth;
        body[9] = colourType;
        return Chunk("IHDR", body);
    }

    /// <summary>IDAT for raw scanlines (filter type 0 is prepended to each row here).</summary>
    public static byte[] Idat(int rowBytes, byte[] rows)
    {
        using var compressed = new MemoryStream();
        using (var zlib = new ZLibStream(compressed, CompressionLevel.Optimal, leaveOpen: true))
        {
            for (int at = 0; at < rows.Length; at += rowBytes)
            {
                zlib.WriteByte(0);
                zlib.Write(rows, at, rowBytes);
            }
        }
        return Chunk("IDAT", compressed.ToArray());
    }

    public static byte[] Deflate(byte[] data)
    {
        using var compressed = new MemoryStream();
        using (var zlib = new ZLibStream(compressed, CompressionLevel.Optimal, leaveOpen: true))
        {
            zlib.Write(data);
        }
        return compressed.ToArray();
    }

    public static byte[] Png(params byte[][] chunks) =>
        [.. PngCodec.Signature, .. chunks.SelectMany(c => c), .. Chunk("IEND", [])];
}

/// <summary>A scratch folder per test, removed afterwards.</summary>
public sealed class TempFolder : IDisposable
{
    public TempFolder()
    {
        Path = Directory.CreateTempSubdirectory("sdappliance-imaging-").FullName;
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose() => Directory.Delete(Path, recursive: true);
}
