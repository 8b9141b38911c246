using System.Buffers.Binary;
using System.Numerics;
using System.Text;

namespace SdAppliance.Formats.Pickle;

/// <summary>
/// Emits pickle protocol 2 opcodes: the subset torch.save itself produces for a state dict, so
/// every unpickler that reads torch files (torch.load, its weights_only mode, A1111's
/// RestrictedUnpickler) reads the result.
/// </summary>
internal sealed class PickleWriter
{
    private readonly MemoryStream _out = new();
    private readonly Dictionary<string, int> _globalMemo = new(StringComparer.Ordinal);

    public byte[] ToArray() => _out.ToArray();

    public void Proto() => _out.Write([0x80, 2]);

    public void Stop() => _out.WriteByte((byte)'.');

    public void Mark() => _out.WriteByte((byte)'(');

    public void EmptyDict() => _out.WriteByte((byte)'}');

    public void EmptyTuple() => _out.WriteByte((byte)')');

    public void Tuple() => _out.WriteByte((byte)'t');

    public void SetItem() => _out.WriteByte((byte)'s');

    public void SetItems() => _out.WriteByte((byte)'u');

    public void Reduce() => _out.WriteByte((byte)'R');

    public void BinPersId() => _out.WriteByte((byte)'Q');

    public void Bool(bool value) => _out.WriteByte(value ? (byte)0x88 : (byte)0x89);

    /// <summary>A global, written once and fetched from the memo afterwards, as Python's pickler does.</summary>
    public void Global(string module, string name)
    {
        var key = $"{module}\n{name}";
        if (_globalMemo.TryGetValue(key, out var index))
        {
            if (index < 256)
                _out.Write([(byte)'h', (byte)index]);
            else
                WriteOpAndInt32((byte)'j', index);
            return;
        }
        _out.WriteByte((byte)'c');
        _out.Write(Encoding.ASCII.GetBytes($"{module}\n{name}\n"));
        index = _globalMemo.Count;
        _globalMemo.Add(key, index);
        if (index < 256)
            _out.Write([(byte)'q', (byte)index]);
        else
            WriteOpAndInt32((byte)'r', index);
    }

    public void String(string value)
    {
        var bytes = Encoding.UTF8.GetBytes(value);
        WriteOpAndInt32((byte)'X', bytes.Length);
        _out.Write(bytes);
    }

    /// <summary>The shortest integer opcode, as Python's pickler chooses it.</summary>
    public void Int(long value)
    {
        if (value is >= 0 and <= 0xFF)
        {
            _out.Write([(byte)'K', (byte)value]);
        }
        else if (value is >= 0 and <= 0xFFFF)
        {
            _out.Write([(byte)'M', (byte)value, (byte)(value >> 8)]);
        }
        else if (value is >= int.MinValue and <= int.MaxValue)
        {
            WriteOpAndInt32((byte)'J', (int)value);
        }
        else
        {
            // LONG1: minimal little-endian two's complement.
            var bytes = new BigInteger(value).ToByteArray(isUnsigned: false, isBigEndian: false);
            _out.Write([0x8a, (byte)bytes.Length]);
            _out.Write(bytes);
        }
    }

    /// <summary>A tuple of integers, with the short tuple opcodes for up to three items.</summary>
    public void IntTuple(IReadOnlyList<long> values)
    {
        if (values.Count == 0)
        {
            EmptyTuple();
            return;
        }
        if (values.Count > 3)
            Mark();
        foreach (var v in values)
            Int(v);
        _out.WriteByte(values.Count switch
        {
            1 => 0x85,
            2 => 0x86,
            3 => 0x87,
            _ => (byte)'t',
        });
    }

    private void WriteOpAndInt32(byte op, int value)
    {
        Span<byte> bytes = stackalloc byte[5];
        bytes[0] = op;
        BinaryPrimitives.WriteInt32LittleEndian(bytes[1..], value);
        _out.Write(bytes);
    }
}
