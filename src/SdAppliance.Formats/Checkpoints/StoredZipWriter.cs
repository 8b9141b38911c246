using System.Buffers.Binary;
using System.Text;

namespace SdAppliance.Formats.Checkpoints;

/// <summary>
/// Writes a zip archive of uncompressed ("stored") entries the way PyTorch's writer lays them
/// out: each entry's data starts at a multiple of 64 bytes (padding goes in an extra field of the
/// local header, id "FB" filled with 'Z', as torch does), so readers can memory-map tensors.
/// Zip64 records are added when sizes or offsets need them. Timestamps are fixed at 1980-01-01,
/// so the same content always gives the same bytes. System.IO.Compression cannot control the
/// alignment, hence this writer.
/// </summary>
internal sealed class StoredZipWriter
{
    public const int Alignment = 64;

    private const uint Max32 = uint.MaxValue;
    private const ushort DosDate1980 = (1 << 5) | 1;
    private const ushort PaddingFieldId = 0x4246; // "FB"

    private readonly Stream _out;
    private readonly bool _forceZip64;
    private readonly List<Entry> _entries = [];
    private Entry? _current;
    private CrcStream? _data;

    /// <param name="output">A seekable stream positioned at 0 (the CRC is patched into each local header).</param>
    /// <param name="forceZip64">Write Zip64 records even when not needed (to test that path with small files).</param>
    public StoredZipWriter(Stream output, bool forceZip64 = false)
    {
        if (!output.CanSeek || !output.CanWrite)
            throw new ArgumentException("The zip writer needs a writable, seekable stream.", nameof(output));
        _out = output;
        _forceZip64 = forceZip64;
    }

    /// <summary>Starts an entry of exactly <paramref name="size"/> bytes; write them to the returned stream, then call <see cref="EndEntry"/>.</summary>
    public Stream BeginEntry(string name, long size)
    {
        if (_current is not null)
            throw new InvalidOperationException("The previous entry is not finished.");
        var nameBytes = Encoding.UTF8.GetBytes(name);
        var offset = _out.Position;
        var zip64 = _forceZip64 || size >= Max32;
        var entry = new Entry(nameBytes, size, offset, utf8Name: nameBytes.Length != name.Length || name.Any(c => c > 0x7F));

        var zip64Extra = zip64 ? 20 : 0;
        var unpadded = offset + 30 + nameBytes.Length + zip64Extra + 4;
        var padding = (int)((Alignment - (unpadded % Alignment)) % Alignment);
        var header = new byte[30 + nameBytes.Length + zip64Extra + 4 + padding];
        var h = header.AsSpan();
        BinaryPrimitives.WriteUInt32LittleEndian(h, 0x04034b50);
        BinaryPrimitives.WriteUInt16LittleEndian(h[4..], (ushort)(zip64 ? 45 : 20));
        BinaryPrimitives.WriteUInt16LittleEndian(h[6..], entry.Flags);
        BinaryPrimitives.WriteUInt16LittleEndian(h[8..], 0); // stored
        BinaryPrimitives.WriteUInt16LittleEndian(h[10..], 0);
        BinaryPrimitives.WriteUInt16LittleEndian(h[12..], DosDate1980);
        // CRC (offset 14) is patched in by EndEntry.
        BinaryPrimitives.WriteUInt32LittleEndian(h[18..], zip64 ? Max32 : (uint)size);
        BinaryPrimitives.WriteUInt32LittleEndian(h[22..], zip64 ? Max32 : (uint)size);
        BinaryPrimitives.WriteUInt16LittleEndian(h[26..], (ushort)nameBytes.Length);
        BinaryPrimitives.WriteUInt16LittleEndian(h[28..], (ushort)(zip64Extra + 4 + padding));
        nameBytes.CopyTo(h[30..]);
        var extra = h[(30 + nameBytes.Length)..];
        if (zip64)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(extra, 0x0001);
            BinaryPrimitives.WriteUInt16LittleEndian(extra[2..], 16);
            BinaryPrimitives.WriteUInt64LittleEndian(extra[4..], (ulong)size);
            BinaryPrimitives.WriteUInt64LittleEndian(extra[12..], (ulong)size);
            extra = extra[20..];
        }
        BinaryPrimitives.WriteUInt16LittleEndian(extra, PaddingFieldId);
        BinaryPrimitives.WriteUInt16LittleEndian(extra[2..], (ushort)padding);
        extra[4..].Fill((byte)'Z');
        _out.Write(header);

        _current = entry;
        _data = new CrcStream(_out);
        return _data;
    }

    /// <summary>Finishes the current entry: checks its size and records its CRC.</summary>
    public void EndEntry()
    {
        var entry = _current ?? throw new InvalidOperationException("No entry is open.");
        var data = _data!;
        if (data.Written != entry.Size)
            throw new InvalidOperationException($"Entry '{Encoding.UTF8.GetString(entry.Name)}' should be {entry.Size} bytes but {data.Written} were written.");
        entry.Crc = data.Crc;
        var end = _out.Position;
        Span<byte> crc = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(crc, entry.Crc);
        _out.Position = entry.Offset + 14;
        _out.Write(crc);
        _out.Position = end;
        _entries.Add(entry);
        _current = null;
        _data = null;
    }

    /// <summary>Writes a whole small entry.</summary>
    public void AddEntry(string name, ReadOnlySpan<byte> content)
    {
        var stream = BeginEntry(name, content.Length);
        stream.Write(content);
        EndEntry();
    }

    /// <summary>Writes the central directory and the end records.</summary>
    public void Finish()
    {
        if (_current is not null)
            throw new InvalidOperationException("The last entry is not finished.");
        var directoryOffset = _out.Position;
        foreach (var e in _entries)
        {
            var sizeIn64 = _forceZip64 || e.Size >= Max32;
            var offsetIn64 = _forceZip64 || e.Offset >= Max32;
            var extraLength = sizeIn64 || offsetIn64 ? 4 + (sizeIn64 ? 16 : 0) + (offsetIn64 ? 8 : 0) : 0;
            var record = new byte[46 + e.Name.Length + extraLength];
            var r = record.AsSpan();
            BinaryPrimitives.WriteUInt32LittleEndian(r, 0x02014b50);
            BinaryPrimitives.WriteUInt16LittleEndian(r[4..], 45);
            BinaryPrimitives.WriteUInt16LittleEndian(r[6..], (ushort)(extraLength > 0 ? 45 : 20));
            BinaryPrimitives.WriteUInt16LittleEndian(r[8..], e.Flags);
            BinaryPrimitives.WriteUInt16LittleEndian(r[10..], 0);
            BinaryPrimitives.WriteUInt16LittleEndian(r[12..], 0);
            BinaryPrimitives.WriteUInt16LittleEndian(r[14..], DosDate1980);
            BinaryPrimitives.WriteUInt32LittleEndian(r[16..], e.Crc);
            BinaryPrimitives.WriteUInt32LittleEndian(r[20..], sizeIn64 ? Max32 : (uint)e.Size);
            BinaryPrimitives.WriteUInt32LittleEndian(r[24..], sizeIn64 ? Max32 : (uint)e.Size);
            BinaryPrimitives.WriteUInt16LittleEndian(r[28..], (ushort)e.Name.Length);
            BinaryPrimitives.WriteUInt16LittleEndian(r[30..], (ushort)extraLength);
            // Comment length, disk number, internal and external attributes stay 0.
            BinaryPrimitives.WriteUInt32LittleEndian(r[42..], offsetIn64 ? Max32 : (uint)e.Offset);
            e.Name.CopyTo(r[46..]);
            if (extraLength > 0)
            {
                var x = r[(46 + e.Name.Length)..];
                BinaryPrimitives.WriteUInt16LittleEndian(x, 0x0001);
                BinaryPrimitives.WriteUInt16LittleEndian(x[2..], (ushort)(extraLength - 4));
                x = x[4..];
                if (sizeIn64)
                {
                    BinaryPrimitives.WriteUInt64LittleEndian(x, (ulong)e.Size);
                    BinaryPrimitives.WriteUInt64LittleEndian(x[8..], (ulong)e.Size);
                    x = x[16..];
                }
                if (offsetIn64)
                    BinaryPrimitives.WriteUInt64LittleEndian(x, (ulong)e.Offset);
            }
            _out.Write(record);
        }
        var directoryEnd = _out.Position;
        var directorySize = directoryEnd - directoryOffset;
        var needs64 = _forceZip64 || _entries.Count >= ushort.MaxValue || directoryOffset >= Max32 || directorySize >= Max32;
        if (needs64)
        {
            Span<byte> end64 = stackalloc byte[56 + 20];
            BinaryPrimitives.WriteUInt32LittleEndian(end64, 0x06064b50);
            BinaryPrimitives.WriteUInt64LittleEndian(end64[4..], 44);
            BinaryPrimitives.WriteUInt16LittleEndian(end64[12..], 45);
            BinaryPrimitives.WriteUInt16LittleEndian(end64[14..], 45);
            BinaryPrimitives.WriteUInt32LittleEndian(end64[16..], 0);
            BinaryPrimitives.WriteUInt32LittleEndian(end64[20..], 0);
            BinaryPrimitives.WriteUInt64LittleEndian(end64[24..], (ulong)_entries.Count);
            BinaryPrimitives.WriteUInt64LittleEndian(end64[32..], (ulong)_entries.Count);
            BinaryPrimitives.WriteUInt64LittleEndian(end64[40..], (ulong)directorySize);
            BinaryPrimitives.WriteUInt64LittleEndian(end64[48..], (ulong)directoryOffset);
            var locator = end64[56..];
            BinaryPrimitives.WriteUInt32LittleEndian(locator, 0x07064b50);
            BinaryPrimitives.WriteUInt32LittleEndian(locator[4..], 0);
            BinaryPrimitives.WriteUInt64LittleEndian(locator[8..], (ulong)directoryEnd);
            BinaryPrimitives.WriteUInt32LittleEndian(locator[16..], 1);
            _out.Write(end64);
        }
        Span<byte> end = stackalloc byte[22];
        BinaryPrimitives.WriteUInt32LittleEndian(end, 0x06054b50);
        var count = needs64 ? ushort.MaxValue : (ushort)_entries.Count;
        BinaryPrimitives.WriteUInt16LittleEndian(end[8..], count);
        BinaryPrimitives.WriteUInt16LittleEndian(end[10..], count);
        BinaryPrimitives.WriteUInt32LittleEndian(end[12..], needs64 ? Max32 : (uint)directorySize);
        BinaryPrimitives.WriteUInt32LittleEndian(end[16..], needs64 ? Max32 : (uint)directoryOffset);
        _out.Write(end);
    }

    private sealed class Entry(byte[] name, long size, long offset, bool utf8Name)
    {
        public byte[] Name { get; } = name;
        public long Size { get; } = size;
        public long Offset { get; } = offset;
        // Bit 11: the name is UTF-8.
        public ushort Flags { get; } = (ushort)(utf8Name ? 1 << 11 : 0);
        public uint Crc { get; set; }
    }

    /// <summary>A <see cref="CountingStream"/> that also checksums what passes through.</summary>
    private sealed class CrcStream(Stream inner) : CountingStream(inner)
    {
        public uint Crc { get; private set; }

        protected override void OnWrite(ReadOnlySpan<byte> buffer) => Crc = Crc32.Append(Crc, buffer);
    }
}
