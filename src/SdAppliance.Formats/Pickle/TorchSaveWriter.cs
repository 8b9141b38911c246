using System.Buffers.Binary;
using System.Globalization;
using System.Numerics;
using System.Text;
using SdAppliance.Formats.Checkpoints;

namespace SdAppliance.Formats.Pickle;

/// <summary>
/// Writes an object tree as <c>torch.save</c> does (zip format, pickle protocol 2): state dicts
/// (<see cref="TorchCheckpointWriter"/> is this writer given an OrderedDict of tensors), A1111
/// hypernetworks (<c>{768: (OrderedDict, OrderedDict), "step": 5, "layer_structure": [1.0, 2.0, 1.0], ...}</c>)
/// and textual-inversion embeddings (<c>{"string_to_param": {"*": tensor}, ...}</c>).
/// </summary>
/// <remarks>
/// <para>The values are those the unpickler hands back, so a file read by <see cref="TorchCheckpoint"/>
/// can be written again: null, bool, int/long, float/double, string, <see cref="PickleTuple"/>,
/// lists (<see cref="IReadOnlyList{T}"/> of objects), <see cref="PickleDict"/> (an OrderedDict when
/// <see cref="PickleDict.IsOrdered"/>) and tensors as <see cref="SafetensorsTensor"/>.</para>
/// <para>The pickle references only <c>collections.OrderedDict</c>, <c>torch._utils._rebuild_tensor_v2</c>
/// and the <c>torch.*Storage</c> classes, which every restricted unpickler of torch files allows. Each
/// tensor gets its own storage <c>archive/data/N</c>, stored uncompressed at a 64-byte aligned offset,
/// followed by the <c>archive/version</c> record "3".</para>
/// <para>No <c>byteorder</c> record is written although torch 2.x writes one: AUTOMATIC1111's
/// safety check (modules/safe.py) rejects any archive entry other than data.pkl, version and
/// data/N, and torch.load reads a file without the record as little-endian, which it is.</para>
/// </remarks>
public static class TorchSaveWriter
{
    /// <summary>The top folder of the archive, as torch 2.x names it.</summary>
    public const string ArchiveFolder = "archive";

    /// <summary>Writes <paramref name="root"/> to <paramref name="path"/> atomically (<see cref="AtomicFile"/>).</summary>
    /// <exception cref="ArgumentException">A value of a type torch files do not hold, or a tensor dtype torch has no storage for.</exception>
    public static void Write(string path, object? root) => Write(path, root, forceZip64: false);

    /// <param name="forceZip64">Write Zip64 records even when not needed (to test that path with small files).</param>
    internal static void Write(string path, object? root, bool forceZip64)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var tensors = new List<SafetensorsTensor>();
        var pickle = BuildPickle(root, tensors);

        AtomicFile.Write(path, file =>
        {
            var zip = new StoredZipWriter(file, forceZip64);
            zip.AddEntry($"{ArchiveFolder}/data.pkl", pickle);
            for (var i = 0; i < tensors.Count; i++)
            {
                var data = zip.BeginEntry($"{ArchiveFolder}/data/{i.ToString(CultureInfo.InvariantCulture)}", tensors[i].ByteLength);
                tensors[i].WriteTo(data);
                zip.EndEntry();
            }
            zip.AddEntry($"{ArchiveFolder}/version", "3\n"u8);
            zip.Finish();
        });
    }

    /// <summary>
    /// A plain dict of one pair written as Python's pickler writes a one-item batch: the pair then
    /// SETITEM, with no MARK. A <see cref="PickleDict"/> is always written in MARK ... SETITEMS
    /// batches; the .ckpt wrapper <c>{"state_dict": ...}</c> has always been written this way.
    /// </summary>
    internal sealed record SingleItemDict(object Key, object? Value);

    /// <summary>The pickle (data.pkl) of <paramref name="root"/>; tensors met on the way are appended to <paramref name="tensors"/> as storages 0, 1...</summary>
    internal static byte[] BuildPickle(object? root, List<SafetensorsTensor> tensors)
    {
        var w = new Emitter();
        w.Op(0x80);
        w.Op(2);
        Value(w, root, tensors, depth: 0);
        w.Op((byte)'.');
        return w.ToArray();
    }

    // Python's pickler batches SETITEMS/APPENDS by 1000.
    private const int BatchSize = 1000;

    // Deeper trees than any checkpoint has are a cycle, not data.
    private const int MaxDepth = 64;

    private static void Value(Emitter w, object? value, List<SafetensorsTensor> tensors, int depth)
    {
        if (depth > MaxDepth) throw new ArgumentException($"the object tree is deeper than {MaxDepth} levels (a cycle?)");
        switch (value)
        {
            case null:
                w.Op((byte)'N');
                break;
            case bool b:
                w.Op(b ? (byte)0x88 : (byte)0x89);
                break;
            case int i:
                w.Int(i);
                break;
            case long l:
                w.Int(l);
                break;
            case float f:
                w.Float(f);
                break;
            case double d:
                w.Float(d);
                break;
            case string s:
                w.String(s);
                break;
            case SafetensorsTensor t:
                Tensor(w, t, tensors);
                break;
            case PickleTuple tuple:
                if (tuple.Count == 0)
                {
                    w.Op((byte)')');
                    break;
                }
                if (tuple.Count > 3) w.Op((byte)'(');
                foreach (var item in tuple) Value(w, item, tensors, depth + 1);
                w.Op(tuple.Count switch { 1 => 0x85, 2 => 0x86, 3 => 0x87, _ => (byte)'t' });
                break;
            case SingleItemDict one:
                w.Op((byte)'}');
                Value(w, one.Key, tensors, depth + 1);
                Value(w, one.Value, tensors, depth + 1);
                w.Op((byte)'s');
                break;
            case PickleDict dict:
                if (dict.IsOrdered)
                {
                    w.Global("collections", "OrderedDict");
                    w.Op((byte)')');
                    w.Op((byte)'R');
                }
                else
                {
                    w.Op((byte)'}');
                }
                var pairs = dict.ToList();
                for (var start = 0; start < pairs.Count; start += BatchSize)
                {
                    w.Op((byte)'(');
                    foreach (var (k, v) in pairs.Skip(start).Take(BatchSize))
                    {
                        Value(w, k, tensors, depth + 1);
                        Value(w, v, tensors, depth + 1);
                    }
                    w.Op((byte)'u');
                }
                break;
            case IReadOnlyList<object?> list:
                w.Op((byte)']');
                for (var start = 0; start < list.Count; start += BatchSize)
                {
                    w.Op((byte)'(');
                    foreach (var item in list.Skip(start).Take(BatchSize)) Value(w, item, tensors, depth + 1);
                    w.Op((byte)'e');
                }
                break;
            default:
                throw new ArgumentException($"a {value.GetType().Name} cannot be written to a torch file; use null, bool, integers, floats, strings, PickleTuple, lists, PickleDict or SafetensorsTensor");
        }
    }

    // _rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict()), the storage being the
    // persistent id ('storage', torch.<Type>Storage, key, 'cpu', numel), as torch.save writes a tensor.
    private static void Tensor(Emitter w, SafetensorsTensor tensor, List<SafetensorsTensor> tensors)
    {
        if (!PickleGlobals.TryGetStorageName(tensor.DType, out var storage))
            throw new ArgumentException($"tensor '{tensor.Name}' is {tensor.DType.ToHeaderName()}, which torch files cannot store");
        var key = tensors.Count;
        tensors.Add(tensor);
        var shape = tensor.Shape;
        var strides = new long[shape.Count];
        var step = 1L;
        for (var d = shape.Count - 1; d >= 0; d--)
        {
            strides[d] = step;
            step *= shape[d];
        }

        w.Global("torch._utils", "_rebuild_tensor_v2");
        w.Op((byte)'(');
        w.Op((byte)'(');
        w.String("storage");
        w.Global("torch", storage);
        w.String(key.ToString(CultureInfo.InvariantCulture));
        w.String("cpu");
        w.Int(step);
        w.Op((byte)'t');
        w.Op((byte)'Q');
        w.Int(0);
        IntTuple(w, shape);
        IntTuple(w, strides);
        w.Op(0x89);
        w.Global("collections", "OrderedDict");
        w.Op((byte)')');
        w.Op((byte)'R');
        w.Op((byte)'t');
        w.Op((byte)'R');
    }

    private static void IntTuple(Emitter w, IReadOnlyList<long> values)
    {
        if (values.Count == 0)
        {
            w.Op((byte)')');
            return;
        }
        if (values.Count > 3) w.Op((byte)'(');
        foreach (var v in values) w.Int(v);
        w.Op(values.Count switch { 1 => 0x85, 2 => 0x86, 3 => 0x87, _ => (byte)'t' });
    }

    /// <summary>The protocol-2 opcodes, with the shortest integer forms and memoised globals as Python writes them.</summary>
    private sealed class Emitter
    {
        private readonly MemoryStream output = new();
        private readonly Dictionary<string, int> globals = new(StringComparer.Ordinal);

        public byte[] ToArray() => output.ToArray();

        public void Op(byte op) => output.WriteByte(op);

        public void Int(long value)
        {
            if (value is >= 0 and <= 0xFF)
            {
                output.Write([(byte)'K', (byte)value]);
            }
            else if (value is >= 0 and <= 0xFFFF)
            {
                output.Write([(byte)'M', (byte)value, (byte)(value >> 8)]);
            }
            else if (value is >= int.MinValue and <= int.MaxValue)
            {
                OpAndInt32((byte)'J', (int)value);
            }
            else
            {
                var bytes = new BigInteger(value).ToByteArray(isUnsigned: false, isBigEndian: false);
                output.Write([0x8a, (byte)bytes.Length]);
                output.Write(bytes);
            }
        }

        // BINFLOAT: an 8-byte big-endian IEEE double, which is how Python pickles every float.
        public void Float(double value)
        {
            Span<byte> bytes = stackalloc byte[9];
            bytes[0] = (byte)'G';
            BinaryPrimitives.WriteDoubleBigEndian(bytes[1..], value);
            output.Write(bytes);
        }

        public void String(string value)
        {
            var bytes = Encoding.UTF8.GetBytes(value);
            OpAndInt32((byte)'X', bytes.Length);
            output.Write(bytes);
        }

        public void Global(string module, string name)
        {
            var key = module + "\n" + name;
            if (globals.TryGetValue(key, out var index))
            {
                if (index < 256) output.Write([(byte)'h', (byte)index]);
                else OpAndInt32((byte)'j', index);
                return;
            }
            output.WriteByte((byte)'c');
            output.Write(Encoding.ASCII.GetBytes(key + "\n"));
            index = globals.Count;
            globals.Add(key, index);
            if (index < 256) output.Write([(byte)'q', (byte)index]);
            else OpAndInt32((byte)'r', index);
        }

        private void OpAndInt32(byte op, int value)
        {
            Span<byte> bytes = stackalloc byte[5];
            bytes[0] = op;
            BinaryPrimitives.WriteInt32LittleEndian(bytes[1..], value);
            output.Write(bytes);
        }
    }
}
