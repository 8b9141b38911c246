using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using System.Text;
using static SdAppliance.Torch.Native.LibSdTorch;

namespace SdAppliance.Torch.Native;

/// <summary>An aten operator named by its schema (<c>aten::add.Tensor</c>), resolved once.</summary>
internal sealed unsafe class Op
{
    private static readonly ConcurrentDictionary<(string, string), Op> Cache = new();
    private IntPtr handle;

    private Op(string name, string overload)
    {
        Name = name;
        Overload = overload;
    }

    public string Name { get; }
    public string Overload { get; }

    /// <summary>
    /// The operator of that name. Looking it up hashes both strings (about 20 ns): the wrappers of
    /// per-step loops (Tensor's arithmetic) keep the result in a static field instead.
    /// </summary>
    public static Op Get(string name, string overload = "") => Cache.GetOrAdd((name, overload), k => new Op(k.Item1, k.Item2));

    /// <summary>Whether this libtorch has the operator (some exist only in newer versions).</summary>
    public bool Exists
    {
        get
        {
            if (handle != IntPtr.Zero) return true;
            var h = sdt_op_find(Name, Overload);
            if (h == IntPtr.Zero)
            {
                sdt_clear_error();
                return false;
            }
            handle = h;
            return true;
        }
    }

    public IntPtr Handle => handle != IntPtr.Zero ? handle : handle = CheckHandle(sdt_op_find(Name, Overload));

    /// <summary>The schema the loaded libtorch declares, e.g. <c>aten::add.Tensor(Tensor self, Tensor other, *, Scalar alpha=1) -> Tensor</c>.</summary>
    public string Schema
    {
        get
        {
            var length = Check(sdt_op_schema(Handle, null, 0));
            var buffer = new byte[length + 1];
            fixed (byte* p = buffer) Check(sdt_op_schema(Handle, p, buffer.Length));
            return Encoding.UTF8.GetString(buffer, 0, length);
        }
    }

    public override string ToString() => Overload.Length == 0 ? Name : $"{Name}.{Overload}";

    public OpCall Begin() => OpCall.Begin(this);
}

/// <summary>
/// Builds one operator call: arguments are pushed in schema order into a packed array that
/// crosses to libtorch in a single native call (trailing arguments left out take the schema's
/// defaults; the shim checks each against its declared type). Calls come from a per-thread pool,
/// so building one call while evaluating another's arguments is safe.
/// </summary>
internal sealed unsafe class OpCall
{
    private const int DirectOutputs = 8;

    [ThreadStatic] private static Stack<OpCall>? pool;
    [ThreadStatic] private static Action<Op>? checkOnly;

    // Native memory, so the pointers handed to the shim need no pinning. List elements and strings
    // live in `data` (8-byte slots) and are addressed by offset until the call, as the buffer may grow.
    private Arg* args = (Arg*)NativeMemory.Alloc(16, (nuint)sizeof(Arg));
    private int argCapacity = 16;
    private int argCount;
    private long* data = (long*)NativeMemory.Alloc(64, sizeof(long));
    private int dataCapacity = 64;
    private int dataCount;

    // The .NET objects whose native handles were pushed: alive until the call is made, so a
    // temporary (`.T(a.Mul(b))`) cannot be finalized in between.
    private readonly List<object> pushed = [];
    private Op op = null!;

    private OpCall() { }

    ~OpCall()
    {
        NativeMemory.Free(args);
        NativeMemory.Free(data);
    }

    internal static OpCall Begin(Op op)
    {
        pool ??= new Stack<OpCall>();
        var call = pool.Count > 0 ? pool.Pop() : new OpCall();
        call.op = op;
        call.argCount = 0;
        call.dataCount = 0;
        return call;
    }

    /// <summary>
    /// Until disposed, operator calls on this thread only check their arguments against the schema
    /// (throwing as a real call would), tell <paramref name="seen"/> the operator, and return
    /// placeholder tensors: a test can walk every wrapper without running a kernel.
    /// </summary>
    internal static IDisposable CheckArgumentsOnly(Action<Op> seen)
    {
        var previous = checkOnly;
        checkOnly = seen;
        return new Restore(() => checkOnly = previous);
    }

    private sealed class Restore(Action restore) : IDisposable
    {
        public void Dispose() => restore();
    }

    private void Release()
    {
        pushed.Clear();
        pool!.Push(this);
    }

    private ref Arg Push(ArgKind kind)
    {
        if (argCount == argCapacity)
        {
            argCapacity *= 2;
            args = (Arg*)NativeMemory.Realloc(args, (nuint)(argCapacity * sizeof(Arg)));
        }
        ref var a = ref args[argCount++];
        a = default;
        a.Kind = kind;
        return ref a;
    }

    // Reserves `slots` 8-byte slots in the data buffer; returns the offset of the first.
    private int Reserve(int slots)
    {
        if (dataCount + slots > dataCapacity)
        {
            dataCapacity = Math.Max(dataCapacity * 2, dataCount + slots);
            data = (long*)NativeMemory.Realloc(data, (nuint)(dataCapacity * sizeof(long)));
        }
        var offset = dataCount;
        dataCount += slots;
        return offset;
    }

    private OpCall PushList(ArgKind kind, int count, int offset)
    {
        ref var a = ref Push(kind);
        a.Count = count;
        a.I = offset;
        return this;
    }

    public OpCall T(Tensor? t)
    {
        ref var a = ref Push(ArgKind.Tensor);
        if (t is not null)
        {
            a.P = t.Handle;
            pushed.Add(t);
        }
        return this;
    }

    public OpCall I(long v)
    {
        Push(ArgKind.Int).I = v;
        return this;
    }

    public OpCall I(long? v) => v is { } x ? I(x) : None();

    public OpCall D(double v)
    {
        Push(ArgKind.Double).D = v;
        return this;
    }

    public OpCall D(double? v) => v is { } x ? D(x) : None();

    public OpCall B(bool v)
    {
        Push(ArgKind.Bool).I = v ? 1 : 0;
        return this;
    }

    public OpCall S(string v)
    {
        var bytes = Encoding.UTF8.GetByteCount(v);
        var offset = Reserve(bytes / sizeof(long) + 1);
        var p = (byte*)(data + offset);
        Encoding.UTF8.GetBytes(v, new Span<byte>(p, bytes));
        p[bytes] = 0;
        return PushList(ArgKind.String, bytes, offset);
    }

    public OpCall None()
    {
        Push(ArgKind.None);
        return this;
    }

    public OpCall Default()
    {
        Push(ArgKind.Default);
        return this;
    }

    public OpCall Ints(ReadOnlySpan<long> v)
    {
        var offset = Reserve(v.Length);
        v.CopyTo(new Span<long>(data + offset, v.Length));
        return PushList(ArgKind.IntList, v.Length, offset);
    }

    public OpCall Doubles(ReadOnlySpan<double> v)
    {
        var offset = Reserve(v.Length);
        v.CopyTo(new Span<double>(data + offset, v.Length));
        return PushList(ArgKind.DoubleList, v.Length, offset);
    }

    public OpCall Tensors(IReadOnlyList<Tensor> v)
    {
        var offset = Reserve(v.Count);
        for (var i = 0; i < v.Count; i++) data[offset + i] = v[i].Handle;
        pushed.Add(v);
        return PushList(ArgKind.TensorList, v.Count, offset);
    }

    public OpCall DT(DType? dtype)
    {
        if (dtype is not { } d) return None();
        Push(ArgKind.ScalarType).I = (long)d;
        return this;
    }

    public OpCall Dev(Device? device)
    {
        if (device is not { } d) return None();
        ref var a = ref Push(ArgKind.Device);
        a.I = (long)d.Type;
        a.Count = d.Index;
        return this;
    }

    public OpCall Gen(Generator? generator)
    {
        ref var a = ref Push(ArgKind.Generator);
        if (generator is not null)
        {
            a.P = generator.Handle;
            pushed.Add(generator);
        }
        return this;
    }

    // Turns the offsets of list and string arguments into addresses, now that the buffer is final.
    private void Resolve()
    {
        for (var i = 0; i < argCount; i++)
        {
            ref var a = ref args[i];
            if (a.Kind is ArgKind.String or ArgKind.IntList or ArgKind.DoubleList or ArgKind.BoolList or ArgKind.TensorList)
                a.P = (IntPtr)(data + a.I);
        }
    }

    // Runs the call (outputs NULL: discard them); returns the number of tensors produced. On
    // failure the call goes back to the pool and libtorch's message is thrown.
    private int Run(IntPtr* outputs, int maxOutputs, double* scalar)
    {
        Resolve();
        if (checkOnly is { } seen) return CheckOnly(seen, outputs, maxOutputs, scalar);
        var n = sdt_op_call(op.Handle, args, argCount, outputs, maxOutputs, scalar);
        GC.KeepAlive(pushed);
        if (n < 0)
        {
            Release();
            ThrowIfError();
        }
        return n;
    }

    private int CheckOnly(Action<Op> seen, IntPtr* outputs, int maxOutputs, double* scalar)
    {
        var status = sdt_op_check(op.Handle, args, argCount);
        if (status < 0)
        {
            Release();
            ThrowIfError();
        }
        seen(op);
        const int placeholders = 2;  // enough for the (values, indices) pairs wrappers unpack
        var zeros = stackalloc float[4];
        var shape = stackalloc long[] { 1, 1, 2, 2 };
        for (var i = 0; i < Math.Min(placeholders, maxOutputs); i++)
            outputs[i] = CheckHandle(sdt_tensor_from_data(zeros, 4 * sizeof(float), shape, 4, (int)DType.Float32));
        if (scalar != null) *scalar = 0;
        return outputs == null ? 0 : Math.Min(placeholders, maxOutputs);
    }

    /// <summary>Calls an operator returning one tensor.</summary>
    public Tensor Call()
    {
        var handles = stackalloc IntPtr[1];
        var n = Run(handles, 1, null);
        Release();
        if (n < 1) throw new TorchException($"{op} returned no tensor");
        if (n > 1) FreeOverflow(n - 1);
        return new Tensor(handles[0]);
    }

    private static void FreeOverflow(int count)
    {
        var rest = new IntPtr[count];
        fixed (IntPtr* p = rest) Check(sdt_op_take_outputs(p, count));
        foreach (var h in rest) sdt_tensor_free(h);
    }

    /// <summary>Calls an operator returning tensors (a list or a tuple), in order.</summary>
    public Tensor[] CallMany()
    {
        var handles = stackalloc IntPtr[DirectOutputs];
        var n = Run(handles, DirectOutputs, null);
        Release();
        var result = new Tensor[n];
        for (var i = 0; i < Math.Min(n, DirectOutputs); i++) result[i] = new Tensor(handles[i]);
        if (n > DirectOutputs)
        {
            var rest = new IntPtr[n - DirectOutputs];
            fixed (IntPtr* p = rest) Check(sdt_op_take_outputs(p, rest.Length));
            for (var i = 0; i < rest.Length; i++) result[DirectOutputs + i] = new Tensor(rest[i]);
        }
        return result;
    }

    /// <summary>Calls an in-place operator on <paramref name="self"/> and returns it.</summary>
    public Tensor CallInPlace(Tensor self)
    {
        Run(null, 0, null);
        Release();
        return self;
    }

    /// <summary>Calls an operator returning a number (int, float or bool).</summary>
    public double CallScalar()
    {
        double v;
        Run(null, 0, &v);
        Release();
        return v;
    }
}
