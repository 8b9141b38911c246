using System.Buffers.Binary;
using System.Text;

namespace SdAppliance.Training.Runs;

/// <summary>
/// A TensorBoard event file (<c>events.out.tfevents.TIME.HOST</c>) of scalar summaries, written the
/// way TensorFlow's writer does: TFRecord framing (length, masked CRC-32C of the length, the record,
/// masked CRC-32C of the record) around protobuf <c>Event</c> messages, the first one carrying
/// <c>file_version: "brain.Event:2"</c>. The protobuf is encoded by hand: the three fields used are
/// wall_time (1, double), step (2, int64), file_version (3, string) and summary (5) with values
/// (1) of tag (1, string) and simple_value (2, float).
/// </summary>
public sealed class TensorBoardWriter : IDisposable
{
    private readonly FileStream file;

    public TensorBoardWriter(string folder)
    {
        Directory.CreateDirectory(folder);
        var seconds = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        Path = System.IO.Path.Combine(folder, $"events.out.tfevents.{seconds}.sdappliance");
        file = new FileStream(Path, FileMode.Append, FileAccess.Write, FileShare.Read);
        var header = new ProtoWriter();
        header.Double(1, WallTime());
        header.String(3, "brain.Event:2");
        WriteRecord(header.ToArray());
    }

    public string Path { get; }

    public void Scalar(string tag, double value, long step)
    {
        var val = new ProtoWriter();
        val.String(1, tag);
        val.Float(2, (float)value);
        var summary = new ProtoWriter();
        summary.Message(1, val.ToArray());
        var evt = new ProtoWriter();
        evt.Double(1, WallTime());
        evt.Int64(2, step);
        evt.Message(5, summary.ToArray());
        WriteRecord(evt.ToArray());
    }

    public void Flush() => file.Flush();

    public void Dispose() => file.Dispose();

    private static double WallTime() => DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000.0;

    private void WriteRecord(byte[] data)
    {
        Span<byte> header = stackalloc byte[12];
        BinaryPrimitives.WriteUInt64LittleEndian(header, (ulong)data.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(header[8..], Crc32C.Masked(header[..8]));
        file.Write(header);
        file.Write(data);
        Span<byte> footer = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(footer, Crc32C.Masked(data));
        file.Write(footer);
    }

    private sealed class ProtoWriter
    {
        private readonly MemoryStream stream = new();

        private void Varint(ulong value)
        {
            while (value >= 0x80)
            {
                stream.WriteByte((byte)(value | 0x80));
                value >>= 7;
            }
            stream.WriteByte((byte)value);
        }

        private void Tag(int field, int wireType) => Varint((ulong)((field << 3) | wireType));

        public void Double(int field, double value)
        {
            Tag(field, 1);
            Span<byte> b = stackalloc byte[8];
            BinaryPrimitives.WriteDoubleLittleEndian(b, value);
            stream.Write(b);
        }

        public void Float(int field, float value)
        {
            Tag(field, 5);
            Span<byte> b = stackalloc byte[4];
            BinaryPrimitives.WriteSingleLittleEndian(b, value);
            stream.Write(b);
        }

        public void Int64(int field, long value)
        {
            Tag(field, 0);
            Varint((ulong)value);
        }

        public void String(int field, string value) => Message(field, Encoding.UTF8.GetBytes(value));

        public void Message(int field, byte[] bytes)
        {
            Tag(field, 2);
            Varint((ulong)bytes.Length);
            stream.Write(bytes);
        }

        public byte[] ToArray() => stream.ToArray();
    }
}

/// <summary>CRC-32C (Castagnoli), and TFRecord's masking of it.</summary>
public static class Crc32C
{
    private static readonly uint[] Table = Enumerable.Range(0, 256).Select(i =>
    {
        var c = (uint)i;
        for (var k = 0; k < 8; k++) c = (c & 1) != 0 ? 0x82F63B78u ^ (c >> 1) : c >> 1;
        return c;
    }).ToArray();

    public static uint Compute(ReadOnlySpan<byte> data)
    {
        var crc = 0xFFFFFFFFu;
        foreach (var b in data) crc = Table[(crc ^ b) & 0xFF] ^ (crc >> 8);
        return crc ^ 0xFFFFFFFFu;
    }

    public static uint Masked(ReadOnlySpan<byte> data)
    {
        var crc = Compute(data);
        return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u;
    }
}
