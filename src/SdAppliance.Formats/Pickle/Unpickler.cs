using System.Buffers.Binary;
using System.Globalization;
using System.Numerics;
using System.Text;

namespace SdAppliance.Formats.Pickle;

/// <summary>
/// A restricted unpickler for PyTorch checkpoints. It implements the pickle virtual machine
/// (protocols 0-5) but never imports or runs anything: a GLOBAL that is not on the allow-list of
/// <see cref="PickleGlobals"/> is refused with <see cref="UnsafePickleException"/> the moment it is
/// read, and the allowed ones are interpreted by fixed C# code (an OrderedDict becomes a
/// <see cref="PickleDict"/>, <c>torch._utils._rebuild_tensor_v2</c> a lazy tensor...).
/// </summary>
public sealed class Unpickler
{
    private readonly PickleReader _in;
    private readonly Func<object?, object?>? _persistentLoad;
    private readonly List<object?> _stack = [];
    private readonly List<int> _marks = [];
    private readonly Dictionary<long, object?> _memo = [];
    private long _op;

    /// <summary>Reads pickles from <paramref name="stream"/>, which is left open.</summary>
    /// <param name="stream">The data; reading starts at its current position.</param>
    /// <param name="persistentLoad">Resolves persistent ids (PERSID/BINPERSID), as torch.load's
    /// persistent_load does; a pickle that uses one without a resolver is refused.</param>
    public Unpickler(Stream stream, Func<object?, object?>? persistentLoad = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        _in = new PickleReader(stream);
        _persistentLoad = persistentLoad;
    }

    /// <summary>Position of the next unread byte in the stream; after <see cref="Load"/>, just past its STOP.</summary>
    public long Position => _in.Position;

    /// <summary>Unpickles one complete pickle from <paramref name="data"/>.</summary>
    public static object? Load(byte[] data, Func<object?, object?>? persistentLoad = null)
    {
        using var stream = new MemoryStream(data, writable: false);
        return new Unpickler(stream, persistentLoad).Load();
    }

    /// <summary>Reads the next pickle, up to its STOP opcode, and returns its value.</summary>
    /// <exception cref="UnsafePickleException">The pickle references a global that is not allowed.</exception>
    /// <exception cref="PickleFormatException">The pickle is malformed or uses a value in a way that is not allowed.</exception>
    public object? Load()
    {
        _stack.Clear();
        _marks.Clear();
        _memo.Clear();
        while (true)
        {
            _op = _in.Position;
            var opcode = _in.ReadByte(_op);
            try
            {
                if (Step(opcode))
                    return Pop();
            }
            catch (InvalidCastException e)
            {
                throw Fail($"opcode {Describe(opcode)} got a value of the wrong type ({e.Message})");
            }
        }
    }

    // Returns true at STOP.
    private bool Step(byte opcode)
    {
        switch (opcode)
        {
            case Op.Proto:
                var version = _in.ReadByte(_op);
                if (version > 5)
                    throw Fail($"pickle protocol {version} is newer than the highest known (5)");
                break;
            case Op.Frame:
                _in.ReadUInt64(_op); // framing is only a read-ahead hint
                break;
            case Op.Stop:
                if (_stack.Count == 0)
                    throw Fail("STOP with an empty stack");
                if (_marks.Count > 0)
                    throw Fail("STOP inside an unclosed MARK");
                return true;

            case Op.Mark:
                _marks.Add(_stack.Count);
                break;
            case Op.Pop:
                if (_marks.Count > 0 && _marks[^1] == _stack.Count)
                    _marks.RemoveAt(_marks.Count - 1);
                else
                    Pop();
                break;
            case Op.PopMark:
                PopMark();
                break;
            case Op.Dup:
                Push(Peek());
                break;

            case Op.None:
                Push(null);
                break;
            case Op.NewTrue:
                Push(true);
                break;
            case Op.NewFalse:
                Push(false);
                break;
            case Op.Int:
                Push(ParseIntLine(Ascii(_in.ReadLine(_op))));
                break;
            case Op.BinInt:
                Push((long)_in.ReadInt32(_op));
                break;
            case Op.BinInt1:
                Push((long)_in.ReadByte(_op));
                break;
            case Op.BinInt2:
                Push((long)_in.ReadUInt16(_op));
                break;
            case Op.Long:
                Push(ParseLongText(Ascii(_in.ReadLine(_op)).TrimEnd('L')));
                break;
            case Op.Long1:
                Push(DecodeLong(_in.ReadBytes(_in.ReadByte(_op), _op)));
                break;
            case Op.Long4:
                Push(DecodeLong(_in.ReadBytes(_in.ReadInt32(_op), _op)));
                break;
            case Op.Float:
                Push(ParseFloat(Ascii(_in.ReadLine(_op))));
                break;
            case Op.BinFloat:
                Push(BinaryPrimitives.ReadDoubleBigEndian(_in.ReadSpan(8, _op)));
                break;

            case Op.String:
                Push(DecodeLegacyString(UnquoteEscaped(_in.ReadLine(_op))));
                break;
            case Op.BinString:
                Push(DecodeLegacyString(_in.ReadBytes(_in.ReadInt32(_op), _op)));
                break;
            case Op.ShortBinString:
                Push(DecodeLegacyString(_in.ReadBytes(_in.ReadByte(_op), _op)));
                break;
            case Op.Unicode:
                Push(DecodeRawUnicodeEscape(_in.ReadLine(_op)));
                break;
            case Op.BinUnicode:
                Push(Utf8(_in.ReadBytes(_in.ReadUInt32(_op), _op)));
                break;
            case Op.ShortBinUnicode:
                Push(Utf8(_in.ReadBytes(_in.ReadByte(_op), _op)));
                break;
            case Op.BinUnicode8:
                Push(Utf8(_in.ReadBytes(Length64(), _op)));
                break;
            case Op.BinBytes:
                Push(_in.ReadBytes(_in.ReadUInt32(_op), _op));
                break;
            case Op.ShortBinBytes:
                Push(_in.ReadBytes(_in.ReadByte(_op), _op));
                break;
            case Op.BinBytes8:
            case Op.ByteArray8:
                Push(_in.ReadBytes(Length64(), _op));
                break;
            case Op.NextBuffer:
            case Op.ReadOnlyBuffer:
                throw Fail("out-of-band buffers (pickle protocol 5) cannot occur in a file");

            case Op.EmptyTuple:
                Push(PickleTuple.Empty);
                break;
            case Op.Tuple:
                Push(new PickleTuple([.. PopMark()]));
                break;
            case Op.Tuple1:
                Push(new PickleTuple(Pop()));
                break;
            case Op.Tuple2:
            {
                var b = Pop();
                var a = Pop();
                Push(new PickleTuple(a, b));
                break;
            }
            case Op.Tuple3:
            {
                var c = Pop();
                var b = Pop();
                var a = Pop();
                Push(new PickleTuple(a, b, c));
                break;
            }
            case Op.EmptyList:
                Push(new List<object?>());
                break;
            case Op.List:
                Push(PopMark());
                break;
            case Op.Append:
            {
                var item = Pop();
                Append(Peek(), [item]);
                break;
            }
            case Op.Appends:
            {
                var items = PopMark();
                Append(Peek(), items);
                break;
            }
            case Op.EmptyDict:
                Push(new PickleDict());
                break;
            case Op.Dict:
            {
                var items = PopMark();
                var dict = new PickleDict();
                SetItems(dict, items);
                Push(dict);
                break;
            }
            case Op.SetItem:
            {
                var value = Pop();
                var key = Pop();
                SetItems(Peek(), [key, value]);
                break;
            }
            case Op.SetItems:
            {
                var items = PopMark();
                SetItems(Peek(), items);
                break;
            }
            case Op.EmptySet:
                Push(new PickleSet());
                break;
            case Op.AddItems:
            {
                var items = PopMark();
                if (Peek() is not PickleSet set || set.IsFrozen)
                    throw Fail($"ADDITEMS on a {PickleText.TypeName(Peek())}, not a set");
                foreach (var item in items)
                    set.Add(item);
                break;
            }
            case Op.FrozenSet:
            {
                var set = new PickleSet(isFrozen: true);
                foreach (var item in PopMark())
                    set.Add(item);
                Push(set);
                break;
            }

            case Op.Global:
            {
                var module = Utf8(_in.ReadLine(_op));
                var name = Utf8(_in.ReadLine(_op));
                Push(PickleGlobals.Resolve(module, name));
                break;
            }
            case Op.StackGlobal:
            {
                var name = Pop();
                var module = Pop();
                if (module is not string m || name is not string n)
                    throw Fail($"STACK_GLOBAL needs two strings, got {PickleText.TypeName(module)} and {PickleText.TypeName(name)}");
                Push(PickleGlobals.Resolve(m, n));
                break;
            }
            case Op.Inst:
            {
                var type = PickleGlobals.Resolve(Utf8(_in.ReadLine(_op)), Utf8(_in.ReadLine(_op)));
                var args = new PickleTuple([.. PopMark()]);
                Push(Invoke(type, args, asClass: true));
                break;
            }
            case Op.Obj:
            {
                var items = PopMark();
                if (items.Count == 0 || items[0] is not PickleGlobal type)
                    throw Fail("OBJ without a class");
                Push(Invoke(type, new PickleTuple([.. items.Skip(1)]), asClass: true));
                break;
            }
            case Op.Reduce:
            {
                var args = Pop();
                var callable = Pop();
                Push(Invoke(AsCallable(callable), AsArguments(args), asClass: false));
                break;
            }
            case Op.NewObj:
            {
                var args = Pop();
                var type = Pop();
                Push(Invoke(AsCallable(type), AsArguments(args), asClass: true));
                break;
            }
            case Op.NewObjEx:
            {
                var kwargs = Pop();
                var args = Pop();
                var type = Pop();
                if (kwargs is not PickleDict { Count: 0 })
                    throw Fail("NEWOBJ_EX with keyword arguments is not supported");
                Push(Invoke(AsCallable(type), AsArguments(args), asClass: true));
                break;
            }
            case Op.Build:
            {
                var state = Pop();
                Build(Peek(), state);
                break;
            }
            case Op.Ext1:
            case Op.Ext2:
            case Op.Ext4:
                throw Fail("extension-registry codes (EXT1/EXT2/EXT4) name globals indirectly and are not supported");
            case Op.PersId:
                Push(PersistentLoad(Ascii(_in.ReadLine(_op))));
                break;
            case Op.BinPersId:
                Push(PersistentLoad(Pop()));
                break;

            case Op.Put:
                _memo[ParseIndex(Ascii(_in.ReadLine(_op)))] = Peek();
                break;
            case Op.BinPut:
                _memo[_in.ReadByte(_op)] = Peek();
                break;
            case Op.LongBinPut:
                _memo[_in.ReadUInt32(_op)] = Peek();
                break;
            case Op.Memoize:
                _memo[_memo.Count] = Peek();
                break;
            case Op.Get:
                Push(MemoGet(ParseIndex(Ascii(_in.ReadLine(_op)))));
                break;
            case Op.BinGet:
                Push(MemoGet(_in.ReadByte(_op)));
                break;
            case Op.LongBinGet:
                Push(MemoGet(_in.ReadUInt32(_op)));
                break;

            default:
                throw Fail($"unknown opcode 0x{opcode:x2}");
        }
        return false;
    }

    private object? Invoke(PickleGlobal callable, PickleTuple args, bool asClass)
    {
        try
        {
            return PickleGlobals.Invoke(callable, args, asClass);
        }
        catch (PickleCallException e)
        {
            throw Fail(e.Message);
        }
    }

    private void Build(object? target, object? state)
    {
        try
        {
            PickleGlobals.Build(target, state);
        }
        catch (PickleCallException e)
        {
            throw Fail(e.Message);
        }
    }

    private object? PersistentLoad(object? pid)
    {
        if (_persistentLoad is null)
            throw Fail($"the pickle refers to external data (persistent id {PickleText.Repr(pid)}) but nothing resolves it here");
        try
        {
            return _persistentLoad(pid);
        }
        catch (PickleCallException e)
        {
            throw Fail(e.Message);
        }
    }

    private void Append(object? target, List<object?> items)
    {
        switch (target)
        {
            case List<object?> list:
                list.AddRange(items);
                break;
            case PickleObject obj:
                obj.ListItems.AddRange(items);
                break;
            default:
                throw Fail($"APPEND to a {PickleText.TypeName(target)}, not a list");
        }
    }

    private void SetItems(object? target, List<object?> items)
    {
        if (items.Count % 2 != 0)
            throw Fail("SETITEMS with an odd number of items");
        var dict = target switch
        {
            PickleDict d => d,
            PickleObject obj => obj.DictItems,
            _ => throw Fail($"SETITEM on a {PickleText.TypeName(target)}, not a dict"),
        };
        for (var i = 0; i < items.Count; i += 2)
        {
            if (items[i] is List<object?> or PickleDict or PickleSet { IsFrozen: false })
                throw Fail($"a {PickleText.TypeName(items[i])} cannot be a dict key (unhashable)");
            dict.Set(items[i], items[i + 1]);
        }
    }

    private PickleGlobal AsCallable(object? value) =>
        value as PickleGlobal ?? throw Fail($"a {PickleText.TypeName(value)} is called, but only allowed globals can be");

    private PickleTuple AsArguments(object? value) =>
        value as PickleTuple ?? throw Fail($"call arguments are a {PickleText.TypeName(value)}, not a tuple");

    private object? MemoGet(long index) =>
        _memo.TryGetValue(index, out var value) ? value : throw Fail($"memo entry {index} is read before it is written");

    private void Push(object? value) => _stack.Add(value);

    private object? Pop()
    {
        var floor = _marks.Count > 0 ? _marks[^1] : 0;
        if (_stack.Count <= floor)
            throw Fail("stack underflow");
        var value = _stack[^1];
        _stack.RemoveAt(_stack.Count - 1);
        return value;
    }

    private object? Peek()
    {
        var floor = _marks.Count > 0 ? _marks[^1] : 0;
        if (_stack.Count <= floor)
            throw Fail("stack underflow");
        return _stack[^1];
    }

    private List<object?> PopMark()
    {
        if (_marks.Count == 0)
            throw Fail("no MARK to pop back to");
        var mark = _marks[^1];
        _marks.RemoveAt(_marks.Count - 1);
        var items = _stack.GetRange(mark, _stack.Count - mark);
        _stack.RemoveRange(mark, _stack.Count - mark);
        return items;
    }

    private long Length64()
    {
        var length = _in.ReadUInt64(_op);
        return length > long.MaxValue ? throw Fail($"a length of {length} bytes") : (long)length;
    }

    private PickleFormatException Fail(string problem) => new(problem, _op);

    private static string Describe(byte opcode) => opcode is >= 0x20 and < 0x7f ? $"'{(char)opcode}'" : $"0x{opcode:x2}";

    private string Ascii(byte[] line)
    {
        foreach (var b in line)
        {
            if (b >= 0x80)
                throw Fail("a text argument is not ASCII");
        }
        return Encoding.ASCII.GetString(line);
    }

    private static string Utf8(byte[] bytes) => Encoding.UTF8.GetString(bytes);

    // Python 2 str values: torch.load decodes them as UTF-8; bytes that are not are kept as Latin-1 text.
    private static string DecodeLegacyString(byte[] bytes)
    {
        try
        {
            return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            return Encoding.Latin1.GetString(bytes);
        }
    }

    private object ParseIntLine(string text) => text switch
    {
        "00" => false,
        "01" => true,
        _ => ParseLongText(text),
    };

    private object ParseLongText(string text)
    {
        // Python's own limit (sys.int_info.default_max_str_digits); parsing is quadratic beyond it.
        if (text.Length > 4300)
            throw Fail($"an integer written with {text.Length} digits is longer than the 4300 Python accepts");
        if (!BigInteger.TryParse(text.Trim(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var value))
            throw Fail($"'{text}' is not an integer");
        return Normalize(value);
    }

    private long ParseIndex(string text) =>
        long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var index) ? index : throw Fail($"'{text}' is not a memo index");

    private double ParseFloat(string text)
    {
        var t = text.Trim();
        return t switch
        {
            "inf" => double.PositiveInfinity,
            "-inf" => double.NegativeInfinity,
            "nan" => double.NaN,
            _ => double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) ? d : throw Fail($"'{text}' is not a float"),
        };
    }

    // LONG1/LONG4 payloads are little-endian two's complement.
    private static object DecodeLong(byte[] bytes) =>
        bytes.Length == 0 ? 0L : Normalize(new BigInteger(bytes, isUnsigned: false, isBigEndian: false));

    internal static object Normalize(BigInteger value) =>
        value >= long.MinValue && value <= long.MaxValue ? (object)(long)value : value;

    // Protocol 0 STRING: a Python repr, quoted, with backslash escapes.
    private byte[] UnquoteEscaped(byte[] line)
    {
        if (line.Length < 2 || line[0] != line[^1] || (line[0] != '\'' && line[0] != '"'))
            throw Fail("the STRING argument is not quoted");
        var body = line.AsSpan(1, line.Length - 2);
        var result = new List<byte>(body.Length);
        for (var i = 0; i < body.Length; i++)
        {
            if (body[i] != '\\' || i + 1 == body.Length)
            {
                result.Add(body[i]);
                continue;
            }
            var c = (char)body[++i];
            switch (c)
            {
                case 'n': result.Add((byte)'\n'); break;
                case 'r': result.Add((byte)'\r'); break;
                case 't': result.Add((byte)'\t'); break;
                case 'a': result.Add(7); break;
                case 'b': result.Add(8); break;
                case 'f': result.Add(12); break;
                case 'v': result.Add(11); break;
                case '\n': break;
                case 'x' when i + 2 < body.Length && IsHex(body[i + 1]) && IsHex(body[i + 2]):
                    result.Add(byte.Parse(Encoding.ASCII.GetString(body.Slice(i + 1, 2)), NumberStyles.HexNumber, CultureInfo.InvariantCulture));
                    i += 2;
                    break;
                case >= '0' and <= '7':
                    var value = c - '0';
                    for (var k = 0; k < 2 && i + 1 < body.Length && body[i + 1] is >= (byte)'0' and <= (byte)'7'; k++)
                        value = value * 8 + (body[++i] - '0');
                    result.Add((byte)value);
                    break;
                default:
                    result.Add(body[i]);
                    break;
            }
        }
        return [.. result];
    }

    private static bool IsHex(byte b) => b is >= (byte)'0' and <= (byte)'9' or >= (byte)'a' and <= (byte)'f' or >= (byte)'A' and <= (byte)'F';

    // Protocol 0 UNICODE: raw-unicode-escape, i.e. Latin-1 with \uXXXX and \UXXXXXXXX.
    private string DecodeRawUnicodeEscape(byte[] line)
    {
        var text = new StringBuilder(line.Length);
        for (var i = 0; i < line.Length; i++)
        {
            if (line[i] == '\\' && i + 1 < line.Length && (line[i + 1] == 'u' || line[i + 1] == 'U'))
            {
                var digits = line[i + 1] == 'u' ? 4 : 8;
                if (i + 2 + digits > line.Length)
                    throw Fail("a \\u escape is cut short");
                var hex = Encoding.ASCII.GetString(line, i + 2, digits);
                if (!int.TryParse(hex, NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var code) || code > 0x10FFFF)
                    throw Fail($"'\\{(char)line[i + 1]}{hex}' is not a code point");
                text.Append(char.ConvertFromUtf32(code is >= 0xD800 and <= 0xDFFF ? 0xFFFD : code));
                i += 1 + digits;
            }
            else
            {
                text.Append((char)line[i]);
            }
        }
        return text.ToString();
    }

    /// <summary>Pickle opcodes (CPython Lib/pickle.py).</summary>
    private static class Op
    {
        public const byte Mark = (byte)'(';
        public const byte Stop = (byte)'.';
        public const byte Pop = (byte)'0';
        public const byte PopMark = (byte)'1';
        public const byte Dup = (byte)'2';
        public const byte Float = (byte)'F';
        public const byte Int = (byte)'I';
        public const byte BinInt = (byte)'J';
        public const byte BinInt1 = (byte)'K';
        public const byte Long = (byte)'L';
        public const byte BinInt2 = (byte)'M';
        public const byte None = (byte)'N';
        public const byte PersId = (byte)'P';
        public const byte BinPersId = (byte)'Q';
        public const byte Reduce = (byte)'R';
        public const byte String = (byte)'S';
        public const byte BinString = (byte)'T';
        public const byte ShortBinString = (byte)'U';
        public const byte Unicode = (byte)'V';
        public const byte BinUnicode = (byte)'X';
        public const byte Append = (byte)'a';
        public const byte Build = (byte)'b';
        public const byte Global = (byte)'c';
        public const byte Dict = (byte)'d';
        public const byte EmptyDict = (byte)'}';
        public const byte Appends = (byte)'e';
        public const byte Get = (byte)'g';
        public const byte BinGet = (byte)'h';
        public const byte Inst = (byte)'i';
        public const byte LongBinGet = (byte)'j';
        public const byte List = (byte)'l';
        public const byte EmptyList = (byte)']';
        public const byte Obj = (byte)'o';
        public const byte Put = (byte)'p';
        public const byte BinPut = (byte)'q';
        public const byte LongBinPut = (byte)'r';
        public const byte SetItem = (byte)'s';
        public const byte Tuple = (byte)'t';
        public const byte EmptyTuple = (byte)')';
        public const byte SetItems = (byte)'u';
        public const byte BinFloat = (byte)'G';
        public const byte Proto = 0x80;
        public const byte NewObj = 0x81;
        public const byte Ext1 = 0x82;
        public const byte Ext2 = 0x83;
        public const byte Ext4 = 0x84;
        public const byte Tuple1 = 0x85;
        public const byte Tuple2 = 0x86;
        public const byte Tuple3 = 0x87;
        public const byte NewTrue = 0x88;
        public const byte NewFalse = 0x89;
        public const byte Long1 = 0x8a;
        public const byte Long4 = 0x8b;
        public const byte BinBytes = (byte)'B';
        public const byte ShortBinBytes = (byte)'C';
        public const byte ShortBinUnicode = 0x8c;
        public const byte BinUnicode8 = 0x8d;
        public const byte BinBytes8 = 0x8e;
        public const byte EmptySet = 0x8f;
        public const byte AddItems = 0x90;
        public const byte FrozenSet = 0x91;
        public const byte NewObjEx = 0x92;
        public const byte StackGlobal = 0x93;
        public const byte Memoize = 0x94;
        public const byte Frame = 0x95;
        public const byte ByteArray8 = 0x96;
        public const byte NextBuffer = 0x97;
        public const byte ReadOnlyBuffer = 0x98;
    }
}

/// <summary>A value given to an allowed global does not fit what the global accepts.</summary>
internal sealed class PickleCallException(string message) : Exception(message);
