using System.Collections;
using System.Numerics;

namespace SdAppliance.Formats.Pickle;

// What unpickled Python values become:
//   None -> null, bool -> bool, int -> long (BigInteger when it does not fit), float -> double,
//   str -> string, bytes/bytearray -> byte[], tuple -> PickleTuple, list -> List<object?>,
//   dict/OrderedDict -> PickleDict, set/frozenset -> PickleSet, an allowed global used as a value
//   -> PickleGlobal, an instance of an allowed opaque class -> PickleObject, numpy scalars -> the
//   number, numpy arrays -> NumpyArray, torch tensors -> Checkpoints.TorchTensor.

/// <summary>A Python tuple: immutable, compared and hashed by value (so it can be a dict key).</summary>
public sealed class PickleTuple : IReadOnlyList<object?>, IEquatable<PickleTuple>
{
    private readonly object?[] _items;

    /// <summary>A tuple of <paramref name="items"/> (the array is taken, not copied).</summary>
    public PickleTuple(params object?[] items)
    {
        _items = items;
    }

    /// <summary>The empty tuple.</summary>
    public static PickleTuple Empty { get; } = new();

    /// <inheritdoc/>
    public int Count => _items.Length;

    /// <inheritdoc/>
    public object? this[int index] => _items[index];

    /// <inheritdoc/>
    public IEnumerator<object?> GetEnumerator() => ((IEnumerable<object?>)_items).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => _items.GetEnumerator();

    /// <inheritdoc/>
    public bool Equals(PickleTuple? other) => PickleKeyComparer.Instance.Equals(this, other);

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is PickleTuple other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => PickleKeyComparer.Instance.GetHashCode(this);

    /// <inheritdoc/>
    public override string ToString() => PickleText.Repr(this);
}

/// <summary>
/// A Python dict or collections.OrderedDict: insertion-ordered, keys compared the way Python
/// compares the key types a checkpoint can hold (strings, numbers, tuples, globals, bytes).
/// </summary>
public sealed class PickleDict : IEnumerable<KeyValuePair<object?, object?>>
{
    private readonly List<KeyValuePair<object?, object?>> _items = [];
    private readonly Dictionary<KeyBox, int> _index = new(KeyBoxComparer.Instance);

    /// <summary>An empty dict; <paramref name="isOrdered"/> marks a collections.OrderedDict.</summary>
    public PickleDict(bool isOrdered = false)
    {
        IsOrdered = isOrdered;
    }

    /// <summary>Whether the pickle built a collections.OrderedDict rather than a plain dict.</summary>
    public bool IsOrdered { get; }

    /// <summary>Number of entries.</summary>
    public int Count => _items.Count;

    /// <summary>Keys in insertion order.</summary>
    public IEnumerable<object?> Keys => _items.Select(p => p.Key);

    /// <summary>Values in insertion order.</summary>
    public IEnumerable<object?> Values => _items.Select(p => p.Value);

    /// <summary>
    /// Attributes set on the object by the pickle (BUILD), e.g. the "_metadata" that
    /// torch.nn.Module.state_dict() attaches to its OrderedDict; null when there are none.
    /// </summary>
    public PickleDict? Attributes { get; internal set; }

    /// <summary>The value for <paramref name="key"/>.</summary>
    /// <exception cref="KeyNotFoundException">No such key.</exception>
    public object? this[object? key] =>
        TryGetValue(key, out var value) ? value : throw new KeyNotFoundException($"The dict has no key {PickleText.Repr(key)}.");

    /// <summary>Looks <paramref name="key"/> up.</summary>
    public bool TryGetValue(object? key, out object? value)
    {
        if (_index.TryGetValue(new KeyBox(key), out var i))
        {
            value = _items[i].Value;
            return true;
        }
        value = null;
        return false;
    }

    /// <summary>Whether <paramref name="key"/> is present.</summary>
    public bool ContainsKey(object? key) => _index.ContainsKey(new KeyBox(key));

    /// <summary>Sets <paramref name="key"/>; an existing key keeps its position, as in Python.</summary>
    public void Set(object? key, object? value)
    {
        var box = new KeyBox(key);
        if (_index.TryGetValue(box, out var i))
        {
            _items[i] = new KeyValuePair<object?, object?>(_items[i].Key, value);
            return;
        }
        _index.Add(box, _items.Count);
        _items.Add(new KeyValuePair<object?, object?>(key, value));
    }

    /// <inheritdoc/>
    public IEnumerator<KeyValuePair<object?, object?>> GetEnumerator() => _items.GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <inheritdoc/>
    public override string ToString() => $"{(IsOrdered ? "OrderedDict" : "dict")} with {Count} entries";

    private readonly record struct KeyBox(object? Value);

    private sealed class KeyBoxComparer : IEqualityComparer<KeyBox>
    {
        public static readonly KeyBoxComparer Instance = new();

        public bool Equals(KeyBox x, KeyBox y) => PickleKeyComparer.Instance.Equals(x.Value, y.Value);

        public int GetHashCode(KeyBox obj) => PickleKeyComparer.Instance.GetHashCode(obj.Value);
    }
}

/// <summary>A Python set or frozenset, in the order the pickle listed its items.</summary>
public sealed class PickleSet : IReadOnlyCollection<object?>
{
    private readonly List<object?> _items = [];
    private readonly HashSet<object?> _seen = new(PickleKeyComparer.Instance);

    /// <summary>An empty set; <paramref name="isFrozen"/> marks a frozenset.</summary>
    public PickleSet(bool isFrozen = false)
    {
        IsFrozen = isFrozen;
    }

    /// <summary>Whether it is a frozenset.</summary>
    public bool IsFrozen { get; }

    /// <inheritdoc/>
    public int Count => _items.Count;

    /// <summary>Whether <paramref name="item"/> is in the set.</summary>
    public bool Contains(object? item) => _seen.Contains(item);

    internal void Add(object? item)
    {
        if (_seen.Add(item))
            _items.Add(item);
    }

    /// <inheritdoc/>
    public IEnumerator<object?> GetEnumerator() => _items.GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
}

/// <summary>An allowed Python global (class, function or constant) the pickle used as a value, e.g. a storage type or a dict key.</summary>
public sealed record PickleGlobal(string Module, string Name)
{
    /// <summary>"module.name".</summary>
    public string FullName => $"{Module}.{Name}";

    /// <inheritdoc/>
    public override string ToString() => FullName;
}

/// <summary>
/// An instance of an allowed class the appliance does not interpret (e.g. a PyTorch Lightning
/// ModelCheckpoint callback in a training checkpoint): what the pickle said about it is kept,
/// and nothing is ever called.
/// </summary>
public sealed class PickleObject
{
    internal PickleObject(PickleGlobal type, PickleTuple arguments)
    {
        Type = type;
        Arguments = arguments;
    }

    /// <summary>The class.</summary>
    public PickleGlobal Type { get; }

    /// <summary>Constructor arguments as pickled.</summary>
    public PickleTuple Arguments { get; }

    /// <summary>The state the pickle set (BUILD): usually a dict of attributes; null when none.</summary>
    public object? State { get; internal set; }

    /// <summary>Items the pickle appended (APPEND/APPENDS), for list-like classes.</summary>
    public List<object?> ListItems { get; } = [];

    /// <summary>Items the pickle set (SETITEM/SETITEMS), for dict-like classes.</summary>
    public PickleDict DictItems { get; } = new();

    /// <inheritdoc/>
    public override string ToString() => $"<{Type.FullName} object>";
}

/// <summary>A numpy dtype as pickled: a descriptor such as "i8" or "f4" and a byte order.</summary>
public sealed class NumpyDType
{
    internal NumpyDType(string descriptor)
    {
        Descriptor = descriptor;
    }

    /// <summary>numpy's type string without byte order: a kind letter and a size, e.g. "i8", "f4", "b1", "U5".</summary>
    public string Descriptor { get; }

    /// <summary>'&lt;' little, '&gt;' big, '|' not applicable, '=' native (little on every machine this runs on).</summary>
    public char ByteOrder { get; internal set; } = '=';

    /// <summary>The kind letter: 'b' bool, 'i' signed, 'u' unsigned, 'f' float, 'c' complex, 'U'/'S' text, 'O' object...</summary>
    public char Kind => Descriptor.Length > 0 ? Descriptor[0] : '?';

    /// <summary>Bytes per element, or 0 when the descriptor gives none.</summary>
    public int ItemSize => Descriptor.Length > 1 && int.TryParse(Descriptor.AsSpan(1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var n) ? n : 0;

    /// <summary>Whether the data is stored most significant byte first.</summary>
    public bool IsBigEndian => ByteOrder == '>';

    /// <inheritdoc/>
    public override string ToString() => $"dtype('{(ByteOrder is '<' or '>' ? ByteOrder.ToString() : "")}{Descriptor}')";
}

/// <summary>A numpy scalar whose type the unpickler does not turn into a .NET number (text, complex...).</summary>
public sealed record NumpyScalar(NumpyDType DType, byte[] Data);

/// <summary>A numpy array: dtype, shape and its raw bytes (or its items, for object arrays).</summary>
public sealed class NumpyArray
{
    internal NumpyArray()
    {
    }

    /// <summary>Element type; null until the pickle set the array's state.</summary>
    public NumpyDType? DType { get; internal set; }

    /// <summary>Dimensions.</summary>
    public IReadOnlyList<long> Shape { get; internal set; } = [];

    /// <summary>Whether <see cref="Data"/> is in column-major order.</summary>
    public bool IsFortranOrder { get; internal set; }

    /// <summary>The elements' bytes, in the dtype's byte order; empty for object arrays.</summary>
    public byte[] Data { get; internal set; } = [];

    /// <summary>The elements of an object array (dtype "O"); null otherwise.</summary>
    public IReadOnlyList<object?>? Items { get; internal set; }
}

/// <summary>Python-like equality and hashing for the values that can be dict keys or set items.</summary>
internal sealed class PickleKeyComparer : IEqualityComparer<object?>
{
    public static readonly PickleKeyComparer Instance = new();

    // Deeper tuples are compared by reference, so a hostile pickle of nested tuples cannot
    // exhaust the stack while its dict keys are hashed.
    private const int MaxDepth = 64;

    public new bool Equals(object? x, object? y) => Equal(x, y, 0);

    public int GetHashCode(object? obj) => Hash(obj, 0);

    private static bool Equal(object? x, object? y, int depth)
    {
        if (ReferenceEquals(x, y))
            return true;
        if (x is null || y is null)
            return false;
        if (TryNumber(x, out var a) && TryNumber(y, out var b))
            return a.Equals(b);
        switch (x)
        {
            case string s:
                return y is string t && string.Equals(s, t, StringComparison.Ordinal);
            case byte[] bytes:
                return y is byte[] other && bytes.AsSpan().SequenceEqual(other);
            case PickleTuple tx when y is PickleTuple ty:
                if (depth >= MaxDepth || tx.Count != ty.Count)
                    return false;
                for (var i = 0; i < tx.Count; i++)
                {
                    if (!Equal(tx[i], ty[i], depth + 1))
                        return false;
                }
                return true;
            default:
                return x.Equals(y);
        }
    }

    private static int Hash(object? obj, int depth)
    {
        switch (obj)
        {
            case null:
                return 0;
            case string s:
                return StringComparer.Ordinal.GetHashCode(s);
            case byte[] bytes:
                var h = new HashCode();
                h.AddBytes(bytes);
                return h.ToHashCode();
            case PickleTuple t:
                if (depth >= MaxDepth)
                    return t.Count;
                var hash = new HashCode();
                foreach (var item in t)
                    hash.Add(Hash(item, depth + 1));
                return hash.ToHashCode();
            default:
                return TryNumber(obj, out var n) ? n.GetHashCode() : obj.GetHashCode();
        }
    }

    // Python: True == 1 == 1.0 as dict keys; floats with a fraction stay distinct doubles.
    private static bool TryNumber(object value, out object normal)
    {
        switch (value)
        {
            case bool b:
                normal = (BigInteger)(b ? 1 : 0);
                return true;
            case long l:
                normal = (BigInteger)l;
                return true;
            case BigInteger big:
                normal = big;
                return true;
            case double d when double.IsFinite(d) && Math.Floor(d) == d:
                normal = new BigInteger(d);
                return true;
            case double d:
                normal = d;
                return true;
            default:
                normal = value;
                return false;
        }
    }
}

/// <summary>Short Python-like renderings of values for error messages.</summary>
internal static class PickleText
{
    // Tuples inside tuples are spelled out this many levels deep, so a message about a hostile
    // nested value stays short and its rendering cannot exhaust the stack.
    private const int MaxReprDepth = 3;

    public static string Repr(object? value) => Repr(value, 0);

    private static string Repr(object? value, int depth) => value switch
    {
        null => "None",
        bool b => b ? "True" : "False",
        string s => s.Length > 80 ? $"'{s[..77]}...'" : $"'{s}'",
        byte[] bytes => $"<{bytes.Length} bytes>",
        double d => d.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
        BigInteger big when big.GetBitLength() > 256 => $"<int of {big.GetBitLength()} bits>",
        long or BigInteger => Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture)!,
        PickleTuple t when t.Count > 8 || depth >= MaxReprDepth => $"<tuple of {t.Count}>",
        PickleTuple t => "(" + string.Join(", ", t.Select(item => Repr(item, depth + 1))) + (t.Count == 1 ? ",)" : ")"),
        List<object?> list => $"<list of {list.Count}>",
        _ => value.ToString() ?? value.GetType().Name,
    };

    public static string TypeName(object? value) => value switch
    {
        null => "None",
        bool => "bool",
        long or BigInteger => "int",
        double => "float",
        string => "str",
        byte[] => "bytes",
        PickleTuple => "tuple",
        List<object?> => "list",
        PickleDict d => d.IsOrdered ? "OrderedDict" : "dict",
        PickleSet => "set",
        PickleGlobal g => g.FullName,
        PickleObject o => o.Type.FullName,
        _ => value.GetType().Name,
    };
}
