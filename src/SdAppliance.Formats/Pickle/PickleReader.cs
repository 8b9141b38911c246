using System.Buffers.Binary;

namespace SdAppliance.Formats.Pickle;

/// <summary>
/// Buffered forward-only reading of a pickle stream that knows how many bytes it consumed (so the
/// legacy checkpoint format can find the data that follows its pickles) and never allocates more
/// than the stream can still supply, whatever length a hostile opcode claims.
/// </summary>
internal sealed class PickleReader
{
    private const int BufferSize = 64 * 1024;
    private const int MaxLineLength = 1 << 20;

    private readonly Stream _stream;
    private readonly long _streamLength;
    private readonly byte[] _buffer = new byte[BufferSize];
    private int _start;
    private int _end;
    private long _bufferPosition;

    public PickleReader(Stream stream)
    {
        _stream = stream;
        _bufferPosition = stream.CanSeek ? stream.Position : 0;
        _streamLength = stream.CanSeek ? stream.Length : -1;
    }

    /// <summary>Position of the next unread byte, in the stream's coordinates.</summary>
    public long Position => _bufferPosition + _start;

    /// <summary>Whether no byte is left.</summary>
    public bool AtEnd => _start == _end && !Fill();

    public byte ReadByte(long opPosition)
    {
        if (_start == _end && !Fill())
            throw Truncated(opPosition, 1);
        return _buffer[_start++];
    }

    public ReadOnlySpan<byte> ReadSpan(int count, long opPosition)
    {
        if (count > BufferSize)
            throw new InvalidOperationException("Short reads only.");
        if (_end - _start < count)
        {
            Compact();
            while (_end - _start < count)
            {
                if (!Fill())
                    throw Truncated(opPosition, count);
            }
        }
        var span = _buffer.AsSpan(_start, count);
        _start += count;
        return span;
    }

    public int ReadInt32(long opPosition) => BinaryPrimitives.ReadInt32LittleEndian(ReadSpan(4, opPosition));

    public uint ReadUInt32(long opPosition) => BinaryPrimitives.ReadUInt32LittleEndian(ReadSpan(4, opPosition));

    public ushort ReadUInt16(long opPosition) => BinaryPrimitives.ReadUInt16LittleEndian(ReadSpan(2, opPosition));

    public ulong ReadUInt64(long opPosition) => BinaryPrimitives.ReadUInt64LittleEndian(ReadSpan(8, opPosition));

    /// <summary>Reads <paramref name="count"/> bytes into a new array, refusing lengths the stream cannot hold.</summary>
    public byte[] ReadBytes(long count, long opPosition)
    {
        if (count < 0)
            throw new PickleFormatException($"a length of {count} bytes is negative", opPosition);
        if (count > Array.MaxLength)
            throw new PickleFormatException($"a length of {count} bytes is more than one value can hold", opPosition);
        if (_streamLength >= 0 && count > _streamLength - Position)
            throw Truncated(opPosition, count);
        var result = new byte[count];
        var filled = 0;
        while (filled < count)
        {
            if (_start == _end && !Fill())
                throw Truncated(opPosition, count);
            var n = (int)Math.Min(_end - _start, count - filled);
            _buffer.AsSpan(_start, n).CopyTo(result.AsSpan(filled));
            _start += n;
            filled += n;
        }
        return result;
    }

    /// <summary>Reads up to and including '\n'; returns the bytes before it.</summary>
    public byte[] ReadLine(long opPosition)
    {
        var line = new List<byte>();
        while (true)
        {
            var b = ReadByte(opPosition);
            if (b == (byte)'\n')
                return [.. line];
            if (line.Count >= MaxLineLength)
                throw new PickleFormatException($"a text argument runs past {MaxLineLength} bytes without a newline", opPosition);
            line.Add(b);
        }
    }

    private PickleFormatException Truncated(long opPosition, long wanted) =>
        new($"the data ends inside an opcode that needs {wanted} more bytes (truncated file?)", opPosition);

    private void Compact()
    {
        if (_start == 0)
            return;
        _buffer.AsSpan(_start, _end - _start).CopyTo(_buffer);
        _bufferPosition += _start;
        _end -= _start;
        _start = 0;
    }

    private bool Fill()
    {
        if (_end == _buffer.Length)
            Compact();
        if (_start == _end)
        {
            _bufferPosition += _start;
            _start = _end = 0;
        }
        var n = _stream.Read(_buffer, _end, _buffer.Length - _end);
        _end += n;
        return n > 0;
    }
}
