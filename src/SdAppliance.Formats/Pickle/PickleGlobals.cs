using System.Buffers.Binary;
using System.Numerics;
using System.Text;
using SdAppliance.Formats.Checkpoints;

namespace SdAppliance.Formats.Pickle;

/// <summary>
/// The allow-list of Python globals a checkpoint pickle may reference, and what each one means
/// here. It is the set real Stable Diffusion and PyTorch files need (the reference is
/// AUTOMATIC1111's <c>modules/safe.py</c>, whose RestrictedUnpickler loads every common SD
/// checkpoint): OrderedDict, the torch tensor/parameter rebuild functions and storage classes,
/// torch.Size and dtypes, numpy scalars and arrays (A1111 .ckpt files keep <c>global_step</c> as
/// a numpy.int64) with the <c>_codecs.encode</c> that protocol 2 uses for their bytes, set, and
/// the PyTorch Lightning ModelCheckpoint class that training checkpoints use as a dict key, kept
/// as an opaque value; and libtorch's <c>torch.jit._pickle.restore_type_tag</c>, a no-op type
/// annotation that C++ torch::save writes around dicts. Nothing here calls Python; every global is
/// interpreted by C# code below.
/// </summary>
public static class PickleGlobals
{
    private enum Kind
    {
        // May appear as a value (a storage type, a dtype, a dict key) but not be called.
        Value,
        // Called through REDUCE.
        Function,
        // Instantiated through REDUCE, NEWOBJ, INST or OBJ.
        Class,
        // A class whose instances are kept as PickleObject, never interpreted.
        OpaqueClass,
    }

    private static readonly Dictionary<string, SafetensorsDType> StorageTypes = new(StringComparer.Ordinal)
    {
        ["FloatStorage"] = SafetensorsDType.F32,
        ["HalfStorage"] = SafetensorsDType.F16,
        ["BFloat16Storage"] = SafetensorsDType.BF16,
        ["DoubleStorage"] = SafetensorsDType.F64,
        ["LongStorage"] = SafetensorsDType.I64,
        ["IntStorage"] = SafetensorsDType.I32,
        ["ShortStorage"] = SafetensorsDType.I16,
        ["CharStorage"] = SafetensorsDType.I8,
        ["ByteStorage"] = SafetensorsDType.U8,
        ["BoolStorage"] = SafetensorsDType.Bool,
        // Written by torch 2.1+ for the newer dtypes.
        ["Float8_e4m3fnStorage"] = SafetensorsDType.F8E4M3,
        ["Float8_e5m2Storage"] = SafetensorsDType.F8E5M2,
        ["UInt16Storage"] = SafetensorsDType.U16,
        ["UInt32Storage"] = SafetensorsDType.U32,
        ["UInt64Storage"] = SafetensorsDType.U64,
    };

    private static readonly Dictionary<string, Kind> Table = BuildTable();

    /// <summary>Every allowed global, as "module.name".</summary>
    public static IReadOnlyCollection<string> Allowed => Table.Keys;

    /// <summary>Whether the pickle may reference <paramref name="module"/>.<paramref name="name"/>.</summary>
    public static bool IsAllowed(string module, string name) => Table.ContainsKey($"{CanonicalModule(module)}.{name}");

    /// <summary>The element type of a torch storage class (torch.FloatStorage is F32...), if it is one.</summary>
    public static bool TryGetStorageDType(PickleGlobal storageType, out SafetensorsDType dtype)
    {
        ArgumentNullException.ThrowIfNull(storageType);
        dtype = default;
        return storageType.Module == "torch" && StorageTypes.TryGetValue(storageType.Name, out dtype);
    }

    /// <summary>The torch storage class name for <paramref name="dtype"/> ("FloatStorage" for F32...), if torch has one.</summary>
    public static bool TryGetStorageName(SafetensorsDType dtype, out string name)
    {
        foreach (var (storage, type) in StorageTypes)
        {
            if (type == dtype)
            {
                name = storage;
                return true;
            }
        }
        name = "";
        return false;
    }

    internal static PickleGlobal Resolve(string module, string name)
    {
        var canonical = CanonicalModule(module);
        if (!Table.ContainsKey($"{canonical}.{name}"))
            throw new UnsafePickleException(module, name);
        return new PickleGlobal(canonical, name);
    }

    internal static object? Invoke(PickleGlobal callable, PickleTuple args, bool asClass)
    {
        if (!Table.TryGetValue(callable.FullName, out var kind))
            throw new UnsafePickleException(callable.Module, callable.Name);
        if (kind == Kind.OpaqueClass)
            return new PickleObject(callable, args);
        if (kind == Kind.Value || (asClass && kind == Kind.Function))
            throw new PickleCallException($"'{callable.FullName}' is {(kind == Kind.Value ? "not callable" : "not a class")} here");
        return callable.FullName switch
        {
            "collections.OrderedDict" => NewDict(args),
            "builtins.set" => NewSet(args, frozen: false),
            "builtins.frozenset" => NewSet(args, frozen: true),
            "torch.Size" => NewSize(args),
            "torch._utils._rebuild_tensor" => RebuildTensor(args, 4),
            "torch._utils._rebuild_tensor_v2" => RebuildTensor(args, 6),
            "torch._utils._rebuild_parameter" => RebuildParameter(args, 3),
            "torch._utils._rebuild_parameter_with_state" => RebuildParameter(args, 4),
            "torch._tensor._rebuild_from_type_v2" => RebuildFromType(args),
            "torch.jit._pickle.restore_type_tag" => RestoreTypeTag(args),
            "_codecs.encode" => Encode(args),
            "numpy.dtype" => NewNumpyDType(args),
            "numpy.core.multiarray.scalar" or "numpy._core.multiarray.scalar" => NumpyScalarValue(args),
            "numpy.core.multiarray._reconstruct" or "numpy._core.multiarray._reconstruct" => NewNumpyArray(args),
            _ => throw new PickleCallException($"'{callable.FullName}' cannot be called here"),
        };
    }

    internal static void Build(object? target, object? state)
    {
        switch (target)
        {
            case PickleDict dict:
                // OrderedDict pickles its instance __dict__ (torch's state_dict "_metadata") as state.
                var attributes = state is PickleTuple { Count: 2 } pair ? pair[0] : state;
                if (attributes is null)
                    return;
                if (attributes is not PickleDict values)
                    throw new PickleCallException($"BUILD of a dict with a {PickleText.TypeName(attributes)} state");
                dict.Attributes ??= new PickleDict();
                foreach (var (key, value) in values)
                    dict.Attributes.Set(key, value);
                return;
            case PickleObject obj:
                obj.State = state;
                return;
            case NumpyDType dtype:
                BuildNumpyDType(dtype, state);
                return;
            case NumpyArray array:
                BuildNumpyArray(array, state);
                return;
            default:
                throw new PickleCallException($"BUILD (setting object state) on a {PickleText.TypeName(target)} is not allowed");
        }
    }

    private static Dictionary<string, Kind> BuildTable()
    {
        var table = new Dictionary<string, Kind>(StringComparer.Ordinal)
        {
            ["collections.OrderedDict"] = Kind.Class,
            ["builtins.set"] = Kind.Class,
            ["builtins.frozenset"] = Kind.Class,
            ["torch._utils._rebuild_tensor"] = Kind.Function,
            ["torch._utils._rebuild_tensor_v2"] = Kind.Function,
            ["torch._utils._rebuild_parameter"] = Kind.Function,
            ["torch._utils._rebuild_parameter_with_state"] = Kind.Function,
            ["torch._tensor._rebuild_from_type_v2"] = Kind.Function,
            ["torch.jit._pickle.restore_type_tag"] = Kind.Function,
            ["torch.Size"] = Kind.Class,
            ["torch.Tensor"] = Kind.Value,
            ["torch.nn.parameter.Parameter"] = Kind.Value,
            ["torch.nn.modules.container.ParameterDict"] = Kind.OpaqueClass,
            ["_codecs.encode"] = Kind.Function,
            ["numpy.dtype"] = Kind.Class,
            ["numpy.ndarray"] = Kind.Value,
            ["numpy.core.multiarray.scalar"] = Kind.Function,
            ["numpy.core.multiarray._reconstruct"] = Kind.Function,
            ["numpy._core.multiarray.scalar"] = Kind.Function,
            ["numpy._core.multiarray._reconstruct"] = Kind.Function,
            ["pytorch_lightning.callbacks.model_checkpoint"] = Kind.Value,
            ["pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"] = Kind.OpaqueClass,
        };
        foreach (var storage in StorageTypes.Keys)
            table[$"torch.{storage}"] = Kind.Value;
        foreach (var dtype in new[] { "float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool" })
            table[$"torch.{dtype}"] = Kind.Value;
        return table;
    }

    // Protocol 2 pickles written by Python 3 name Python 2's module (pickle's fix_imports).
    private static string CanonicalModule(string module) => module == "__builtin__" ? "builtins" : module;

    private static PickleDict NewDict(PickleTuple args)
    {
        var dict = new PickleDict(isOrdered: true);
        if (args.Count == 0)
            return dict;
        if (args.Count > 1)
            throw new PickleCallException($"OrderedDict takes at most one argument, got {args.Count}");
        foreach (var item in Items(args[0], "OrderedDict argument"))
        {
            if (item is not IReadOnlyList<object?> { Count: 2 } pair)
                throw new PickleCallException("OrderedDict's argument is not a sequence of key/value pairs");
            dict.Set(pair[0], pair[1]);
        }
        return dict;
    }

    private static PickleSet NewSet(PickleTuple args, bool frozen)
    {
        var set = new PickleSet(frozen);
        if (args.Count > 1)
            throw new PickleCallException($"set takes at most one argument, got {args.Count}");
        if (args.Count == 1)
        {
            foreach (var item in Items(args[0], "set argument"))
                set.Add(item);
        }
        return set;
    }

    private static PickleTuple NewSize(PickleTuple args)
    {
        if (args.Count != 1)
            throw new PickleCallException($"torch.Size takes one argument, got {args.Count}");
        return new PickleTuple([.. Ints(args[0], "torch.Size").Cast<object?>()]);
    }

    private static IEnumerable<object?> Items(object? value, string what) => value switch
    {
        PickleTuple t => t,
        List<object?> l => l,
        PickleSet s => s,
        _ => throw new PickleCallException($"the {what} is a {PickleText.TypeName(value)}, not a sequence"),
    };

    private static long[] Ints(object? value, string what)
    {
        var items = value switch
        {
            PickleTuple t => (IReadOnlyList<object?>)t,
            List<object?> l => l,
            _ => throw new PickleCallException($"the {what} is a {PickleText.TypeName(value)}, not a tuple of integers"),
        };
        var result = new long[items.Count];
        for (var i = 0; i < items.Count; i++)
            result[i] = items[i] is long n ? n : throw new PickleCallException($"the {what} holds a {PickleText.TypeName(items[i])}, not an integer");
        return result;
    }

    private static void CheckArity(PickleTuple args, int min, int max, string function)
    {
        if (args.Count < min || args.Count > max)
            throw new PickleCallException($"{function} takes {(min == max ? $"{min}" : $"{min} to {max}")} arguments, got {args.Count}");
    }

    // _rebuild_tensor(storage, storage_offset, size, stride)
    // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    private static TorchTensor RebuildTensor(PickleTuple args, int arity)
    {
        var function = arity == 4 ? "_rebuild_tensor" : "_rebuild_tensor_v2";
        CheckArity(args, arity, arity == 4 ? 4 : 7, function);
        if (args[0] is not TorchStorage storage)
            throw new PickleCallException($"{function}'s storage is a {PickleText.TypeName(args[0])}, not a storage reference");
        if (args[1] is not long offset)
            throw new PickleCallException($"{function}'s storage offset is a {PickleText.TypeName(args[1])}");
        var shape = Ints(args[2], $"{function} size");
        var strides = Ints(args[3], $"{function} stride");
        var requiresGrad = false;
        if (arity == 6)
            requiresGrad = args[4] as bool? ?? throw new PickleCallException($"{function}'s requires_grad is a {PickleText.TypeName(args[4])}");
        return TorchTensor.TryCreate(storage, offset, shape, strides, requiresGrad, out var problem)
            ?? throw new PickleCallException($"a tensor in storage '{storage.Key}' does not fit it: {problem}");
    }

    // _rebuild_parameter(data, requires_grad, backward_hooks[, state])
    private static TorchTensor RebuildParameter(PickleTuple args, int arity)
    {
        CheckArity(args, arity, arity, arity == 3 ? "_rebuild_parameter" : "_rebuild_parameter_with_state");
        if (args[0] is not TorchTensor tensor)
            throw new PickleCallException($"a parameter's data is a {PickleText.TypeName(args[0])}, not a tensor");
        tensor.IsParameter = true;
        tensor.RequiresGrad = args[1] as bool? ?? throw new PickleCallException($"a parameter's requires_grad is a {PickleText.TypeName(args[1])}");
        return tensor;
    }

    // _rebuild_from_type_v2(func, new_type, args, state): how torch pickles tensors that carry Python attributes.
    private static object? RebuildFromType(PickleTuple args)
    {
        CheckArity(args, 4, 4, "_rebuild_from_type_v2");
        if (args[0] is not PickleGlobal { Module: "torch._utils" } function || !Table.TryGetValue(function.FullName, out var kind) || kind != Kind.Function)
            throw new PickleCallException($"_rebuild_from_type_v2 may only call a torch rebuild function, not {PickleText.Repr(args[0])}");
        if (args[1] is not PickleGlobal { FullName: "torch.Tensor" or "torch.nn.parameter.Parameter" } type)
            throw new PickleCallException($"_rebuild_from_type_v2 may only build torch.Tensor or Parameter, not {PickleText.Repr(args[1])}");
        if (args[2] is not PickleTuple inner)
            throw new PickleCallException("_rebuild_from_type_v2's arguments are not a tuple");
        var result = Invoke(function, inner, asClass: false);
        if (result is TorchTensor tensor && type.Name == "Parameter")
            tensor.IsParameter = true;
        return result;
    }

    // restore_type_tag(value, "Dict[str, Tensor]"): libtorch's pickler (torch::pickle_save, C++
    // torch::save) tags dicts and lists with their TorchScript type; torch.load returns the value.
    private static object? RestoreTypeTag(PickleTuple args)
    {
        CheckArity(args, 2, 2, "restore_type_tag");
        return args[1] is string ? args[0] : throw new PickleCallException($"restore_type_tag's type is a {PickleText.TypeName(args[1])}, not text");
    }

    // How protocol 2 pickles bytes: _codecs.encode(text, "latin1").
    private static byte[] Encode(PickleTuple args)
    {
        CheckArity(args, 1, 3, "_codecs.encode");
        if (args[0] is not string text)
            throw new PickleCallException($"_codecs.encode's input is a {PickleText.TypeName(args[0])}, not text");
        var encoding = args.Count > 1 ? args[1] as string ?? throw new PickleCallException("_codecs.encode's encoding is not text") : "utf-8";
        switch (encoding.ToLowerInvariant().Replace('_', '-'))
        {
            case "latin1" or "latin-1" or "iso-8859-1" or "iso8859-1" or "l1":
                if (text.Any(c => c > 0xFF))
                    throw new PickleCallException("_codecs.encode: the text has characters outside Latin-1");
                return Encoding.Latin1.GetBytes(text);
            case "utf-8" or "utf8":
                return Encoding.UTF8.GetBytes(text);
            case "ascii":
                if (text.Any(c => c > 0x7F))
                    throw new PickleCallException("_codecs.encode: the text is not ASCII");
                return Encoding.ASCII.GetBytes(text);
            default:
                throw new PickleCallException($"_codecs.encode with the encoding '{encoding}' is not supported");
        }
    }

    // numpy.dtype(descriptor, align, copy), then BUILD with its state tuple.
    private static NumpyDType NewNumpyDType(PickleTuple args)
    {
        CheckArity(args, 1, 3, "numpy.dtype");
        return args[0] is string descriptor
            ? new NumpyDType(descriptor)
            : throw new PickleCallException($"numpy.dtype's descriptor is a {PickleText.TypeName(args[0])}, not text");
    }

    private static void BuildNumpyDType(NumpyDType dtype, object? state)
    {
        // (version, byteorder, subdescr, names, fields, elsize, alignment, flags[, metadata])
        if (state is not PickleTuple { Count: >= 2 } tuple || tuple[1] is not string { Length: 1 } order || order[0] is not ('<' or '>' or '|' or '='))
            throw new PickleCallException("a numpy dtype's state does not hold a byte order");
        dtype.ByteOrder = order[0];
    }

    // numpy.core.multiarray.scalar(dtype, data): the number itself for bool/int/uint/float dtypes.
    private static object? NumpyScalarValue(PickleTuple args)
    {
        CheckArity(args, 1, 2, "numpy scalar");
        if (args[0] is not NumpyDType dtype)
            throw new PickleCallException($"a numpy scalar's dtype is a {PickleText.TypeName(args[0])}");
        if (dtype.Kind == 'O')
            return args.Count > 1 ? args[1] : null;
        var data = args.Count > 1 ? AsBytes(args[1], "numpy scalar data") : [];
        var size = dtype.ItemSize;
        if (size <= 0 || data.Length != size)
            throw new PickleCallException($"a numpy {dtype} scalar has {data.Length} bytes of data");
        var bytes = (byte[])data.Clone();
        if (dtype.IsBigEndian)
            Array.Reverse(bytes);
        return (dtype.Kind, size) switch
        {
            ('b', 1) => bytes[0] != 0,
            ('i', 1) => (long)(sbyte)bytes[0],
            ('i', 2) => (long)BinaryPrimitives.ReadInt16LittleEndian(bytes),
            ('i', 4) => (long)BinaryPrimitives.ReadInt32LittleEndian(bytes),
            ('i', 8) => BinaryPrimitives.ReadInt64LittleEndian(bytes),
            ('u', 1) => (long)bytes[0],
            ('u', 2) => (long)BinaryPrimitives.ReadUInt16LittleEndian(bytes),
            ('u', 4) => (long)BinaryPrimitives.ReadUInt32LittleEndian(bytes),
            ('u', 8) => Unpickler.Normalize(new BigInteger(BinaryPrimitives.ReadUInt64LittleEndian(bytes))),
            ('f', 2) => (double)BinaryPrimitives.ReadHalfLittleEndian(bytes),
            ('f', 4) => (double)BinaryPrimitives.ReadSingleLittleEndian(bytes),
            ('f', 8) => BinaryPrimitives.ReadDoubleLittleEndian(bytes),
            _ => new NumpyScalar(dtype, data),
        };
    }

    // numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b'), then BUILD with the array's state.
    private static NumpyArray NewNumpyArray(PickleTuple args)
    {
        CheckArity(args, 3, 3, "numpy _reconstruct");
        if (args[0] is not PickleGlobal { FullName: "numpy.ndarray" })
            throw new PickleCallException($"numpy _reconstruct may only build numpy.ndarray, not {PickleText.Repr(args[0])}");
        return new NumpyArray();
    }

    private static void BuildNumpyArray(NumpyArray array, object? state)
    {
        // (version, shape, dtype, is_fortran, data) or, from old numpy, the same without version.
        if (state is not PickleTuple { Count: 4 or 5 } tuple)
            throw new PickleCallException("a numpy array's state is not a 4- or 5-tuple");
        var offset = tuple.Count - 4;
        var shape = Ints(tuple[offset], "numpy array shape");
        if (tuple[offset + 1] is not NumpyDType dtype)
            throw new PickleCallException("a numpy array's state has no dtype");
        if (!SafetensorsDTypes.TryElementCount(shape, out var count))
            throw new PickleCallException($"a numpy array's shape [{string.Join(", ", shape)}] overflows");
        array.DType = dtype;
        array.Shape = shape;
        array.IsFortranOrder = tuple[offset + 2] is true;
        if (dtype.Kind == 'O')
        {
            var items = tuple[offset + 3] as List<object?> ?? throw new PickleCallException("a numpy object array's data is not a list");
            if (items.Count != count)
                throw new PickleCallException($"a numpy object array of {count} elements has {items.Count} items");
            array.Items = items;
            return;
        }
        var data = AsBytes(tuple[offset + 3], "numpy array data");
        if (dtype.ItemSize > 0 && data.Length != count * dtype.ItemSize)
            throw new PickleCallException($"a numpy {dtype} array of shape [{string.Join(", ", shape)}] has {data.Length} bytes of data");
        array.Data = data;
    }

    private static byte[] AsBytes(object? value, string what) => value switch
    {
        byte[] bytes => bytes,
        // Python 2 pickles carry bytes as str; those arrive here as Latin-1 text.
        string text when text.All(c => c <= 0xFF) => Encoding.Latin1.GetBytes(text),
        _ => throw new PickleCallException($"the {what} is a {PickleText.TypeName(value)}, not bytes"),
    };
}
