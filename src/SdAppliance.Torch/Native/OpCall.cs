using System.Collections.Concurrent;
using static SdAppliance.Torch.Native.LibSdTorch;

namespace SdAppliance.Torch.Native;

/// <summary>An aten operator named by its schema (<c>aten::add.Tensor</c>), resolved once.</summary>
internal sealed class Op
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

    public OpCall Begin() => OpCall.Begin(this);
}

/// <summary>
/// Builds the boxed argument list of one operator call. Arguments are pushed in schema order;
/// trailing arguments left out take the schema's defaults. Argument stacks come from a
/// per-thread pool, so building one call while evaluating another's arguments is safe.
/// </summary>
internal sealed unsafe class OpCall
{
    [ThreadStatic] private static Stack<OpCall>? pool;

    private readonly IntPtr args = sdt_args_new();
    private Op op = null!;

    private OpCall() { }

    internal static OpCall Begin(Op op)
    {
        pool ??= new Stack<OpCall>();
        var call = pool.Count > 0 ? pool.Pop() : new OpCall();
        call.op = op;
        sdt_args_clear(call.args);
        return call;
    }

    private void Release() => pool!.Push(this);

    public OpCall T(Tensor? t)
    {
        sdt_args_tensor(args, t is null ? IntPtr.Zero : t.Handle);
        return this;
    }

    public OpCall I(long v)
    {
        sdt_args_int(args, v);
        return this;
    }

    public OpCall I(long? v) => v is { } x ? I(x) : None();

    public OpCall D(double v)
    {
        sdt_args_double(args, v);
        return this;
    }

    public OpCall D(double? v) => v is { } x ? D(x) : None();

    public OpCall B(bool v)
    {
        sdt_args_bool(args, v ? 1 : 0);
        return this;
    }

    public OpCall S(string v)
    {
        sdt_args_string(args, v);
        return this;
    }

    public OpCall None()
    {
        sdt_args_none(args);
        return this;
    }

    public OpCall Default()
    {
        sdt_args_default(args);
        return this;
    }

    public OpCall Ints(ReadOnlySpan<long> v)
    {
        fixed (long* p = v) sdt_args_int_list(args, p, v.Length);
        return this;
    }

    public OpCall Doubles(ReadOnlySpan<double> v)
    {
        fixed (double* p = v) sdt_args_double_list(args, p, v.Length);
        return this;
    }

    public OpCall Tensors(IReadOnlyList<Tensor> v)
    {
        var handles = v.Count <= 64 ? stackalloc IntPtr[v.Count] : new IntPtr[v.Count];
        for (var i = 0; i < v.Count; i++) handles[i] = v[i].Handle;
        fixed (IntPtr* p = handles) sdt_args_tensor_list(args, p, handles.Length);
        return this;
    }

    public OpCall DT(DType? dtype) => dtype is { } d ? I((long)d) : None();

    public OpCall Dev(Device? device)
    {
        if (device is { } d) sdt_args_device(args, (int)d.Type, d.Index);
        else sdt_args_none(args);
        return this;
    }

    public OpCall Gen(Generator? generator)
    {
        sdt_args_generator(args, generator?.Handle ?? IntPtr.Zero);
        return this;
    }

    private int Run()
    {
        var n = sdt_op_call(op.Handle, args);
        if (n < 0)
        {
            Release();
            ThrowIfError();
        }
        return n;
    }

    /// <summary>Calls an operator returning one tensor.</summary>
    public Tensor Call()
    {
        var n = Run();
        IntPtr h;
        var taken = sdt_args_take_outputs(args, &h, 1);
        Release();
        if (n < 1 || taken < 1) throw new TorchException($"{op.Name}.{op.Overload} returned no tensor");
        return new Tensor(h);
    }

    /// <summary>Calls an operator returning tensors (a list or a tuple), in order.</summary>
    public Tensor[] CallMany()
    {
        var n = Run();
        var handles = new IntPtr[n];
        fixed (IntPtr* p = handles) sdt_args_take_outputs(args, p, n);
        Release();
        var result = new Tensor[n];
        for (var i = 0; i < n; i++) result[i] = new Tensor(handles[i]);
        return result;
    }

    /// <summary>Calls an in-place operator on <paramref name="self"/> and returns it.</summary>
    public Tensor CallInPlace(Tensor self)
    {
        var n = Run();
        var handles = stackalloc IntPtr[Math.Max(n, 1)];
        sdt_args_take_outputs(args, handles, n);
        Release();
        for (var i = 0; i < n; i++) sdt_tensor_free(handles[i]);
        return self;
    }

    /// <summary>Calls an operator returning a number (int, float or bool).</summary>
    public double CallScalar()
    {
        Run();
        var v = sdt_args_scalar_output(args);
        sdt_args_take_outputs(args, null, 0);
        Release();
        return v;
    }
}
