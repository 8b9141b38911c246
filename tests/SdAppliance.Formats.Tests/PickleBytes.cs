using System.Buffers.Binary;
using System.Text;

namespace SdAppliance.Formats.Tests;

/// <summary>Hand-assembles pickle byte streams from opcodes and arguments, as CPython's pickle writes them.</summary>
internal static class PickleBytes
{
    /// <summary>Concatenates parts: a byte or int is one byte, a string its ASCII bytes, a byte[] itself.</summary>
    public static byte[] Of(params object[] parts)
    {
        var bytes = new List<byte>();
        foreach (var part in parts)
        {
            switch (part)
            {
                case byte b:
                    bytes.Add(b);
                    break;
                case int i:
                    bytes.Add(checked((byte)i));
                    break;
                case string s:
                    bytes.AddRange(Encoding.ASCII.GetBytes(s));
                    break;
                case byte[] raw:
                    bytes.AddRange(raw);
                    break;
                default:
                    throw new ArgumentException($"Cannot add a {part.GetType().Name}.");
            }
        }
        return [.. bytes];
    }

    /// <summary>PROTO 2 ... STOP around <paramref name="body"/>.</summary>
    public static byte[] Protocol2(params object[] body) => Of([0x80, 2, .. body, "."]);

    /// <summary>GLOBAL module name.</summary>
    public static byte[] Global(string module, string name) => Encoding.UTF8.GetBytes($"c{module}\n{name}\n");

    /// <summary>BINUNICODE.</summary>
    public static byte[] Unicode(string text)
    {
        var utf8 = Encoding.UTF8.GetBytes(text);
        return [(byte)'X', .. Int32(utf8.Length), .. utf8];
    }

    /// <summary>SHORT_BINUNICODE (protocol 4).</summary>
    public static byte[] ShortUnicode(string text)
    {
        var utf8 = Encoding.UTF8.GetBytes(text);
        return [0x8c, (byte)utf8.Length, .. utf8];
    }

    /// <summary>BININT.</summary>
    public static byte[] BinInt(int value) => [(byte)'J', .. Int32(value)];

    /// <summary>BINFLOAT (big-endian, as pickle stores it).</summary>
    public static byte[] BinFloat(double value)
    {
        var bytes = new byte[9];
        bytes[0] = (byte)'G';
        BinaryPrimitives.WriteDoubleBigEndian(bytes.AsSpan(1), value);
        return bytes;
    }

    /// <summary>_codecs.encode(text, 'latin1'): how protocol 2 pickles bytes.</summary>
    public static byte[] Bytes2(byte[] data) =>
        Of(Global("_codecs", "encode"), Unicode(Encoding.Latin1.GetString(data)), Unicode("latin1"), 0x86, "R");

    /// <summary>A numpy scalar as numpy pickles it: scalar(dtype(descr, False, True) + BUILD state, bytes).</summary>
    public static byte[] NumpyScalar(string descriptor, char byteOrder, byte[] data) => Of(
        Global("numpy.core.multiarray", "scalar"),
        Global("numpy", "dtype"), Unicode(descriptor), 0x89, 0x88, 0x87, "R",
        "(", "K", 3, Unicode(byteOrder.ToString()), "NNN", BinInt(-1), BinInt(-1), "K", 0, "tb",
        Bytes2(data), 0x86, "R");

    public static byte[] Int32(int value)
    {
        var bytes = new byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(bytes, value);
        return bytes;
    }

    public static byte[] Int64(long value)
    {
        var bytes = new byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(bytes, value);
        return bytes;
    }
}
