using System.Runtime.InteropServices;
using SdAppliance.Torch.Native;
using static SdAppliance.Torch.Native.LibSdTorch;

namespace SdAppliance.Torch;

/// <summary>
/// A libtorch tensor. Each instance owns one native reference: dispose it (or let a
/// <see cref="DisposeScope"/> do so); the finalizer is only a safety net. Operations live in
/// the partial files beside this one, named as in PyTorch.
/// </summary>
public sealed unsafe partial class Tensor : IDisposable
{
    private IntPtr handle;

    internal Tensor(IntPtr handle)
    {
        this.handle = CheckHandle(handle);
        Scope = DisposeScope.Current;
        Scope?.Add(this);
    }

    ~Tensor()
    {
        var h = Interlocked.Exchange(ref handle, IntPtr.Zero);
        if (h != IntPtr.Zero) sdt_tensor_free(h);
    }

    internal DisposeScope? Scope { get; set; }

    internal IntPtr Handle => handle != IntPtr.Zero ? handle : throw new ObjectDisposedException(nameof(Tensor), "this tensor was disposed (by its dispose scope?)");

    public bool IsDisposed => handle == IntPtr.Zero;

    public void Dispose()
    {
        var h = Interlocked.Exchange(ref handle, IntPtr.Zero);
        if (h == IntPtr.Zero) return;
        Scope?.Remove(this);
        Scope = null;
        sdt_tensor_free(h);
        GC.SuppressFinalize(this);
    }

    /// <summary>Hands this tensor to the scope around the current one (or to no scope).</summary>
    public Tensor MoveToOuterScope()
    {
        Scope?.MoveToOuter(this);
        return this;
    }

    /// <summary>Takes this tensor out of every dispose scope: the caller owns it.</summary>
    public Tensor DetachFromDisposeScope()
    {
        Scope?.Remove(this);
        Scope = null;
        return this;
    }

    /// <summary>A second .NET handle on the same native tensor (same storage, same autograd identity).</summary>
    public Tensor Alias() => new(sdt_tensor_alias(Handle));

    /// <summary>Whether both handles refer to the very same native tensor.</summary>
    public bool IsSameAs(Tensor other) => Check(sdt_tensor_same(Handle, other.Handle)) != 0;

    // ---- metadata ----
    public int Dim => Check(sdt_tensor_dim(Handle));

    public long[] Shape
    {
        get
        {
            var s = new long[Dim];
            fixed (long* p = s) Check(sdt_tensor_sizes(Handle, p, s.Length));
            return s;
        }
    }

    public long[] Strides
    {
        get
        {
            var s = new long[Dim];
            fixed (long* p = s) Check(sdt_tensor_strides(Handle, p, s.Length));
            return s;
        }
    }

    /// <summary>Size of one dimension; negative dims count from the end.</summary>
    public long Size(int dim)
    {
        var shape = Shape;
        return shape[dim < 0 ? dim + shape.Length : dim];
    }

    public long NumEl => Check(sdt_tensor_numel(Handle));

    public DType DType => (DType)Check(sdt_tensor_dtype(Handle));

    public Device Device
    {
        get
        {
            int index;
            var type = Check(sdt_tensor_device(Handle, &index));
            return new Device((DeviceType)type, index);
        }
    }

    public long ElementSize => Check(sdt_tensor_element_size(Handle));

    public bool IsContiguous => Check(sdt_tensor_is_contiguous(Handle)) != 0;

    /// <summary>Address of the first element (CPU tensors; valid while the tensor lives).</summary>
    public IntPtr DataPointer => CheckHandle(sdt_tensor_data_ptr(Handle));

    // ---- data out ----
    /// <summary>Copies the elements, in row-major order, into a new array of T (whose size must match the dtype).</summary>
    public T[] ToArray<T>() where T : unmanaged
    {
        CheckElementType<T>();
        var result = new T[NumEl];
        fixed (T* p = result) Check(sdt_tensor_copy_out(Handle, p, (long)result.Length * sizeof(T)));
        return result;
    }

    /// <summary>Copies the elements into <paramref name="destination"/>, which must hold exactly NumEl elements.</summary>
    public void CopyTo<T>(Span<T> destination) where T : unmanaged
    {
        CheckElementType<T>();
        fixed (T* p = destination) Check(sdt_tensor_copy_out(Handle, p, (long)destination.Length * sizeof(T)));
    }

    /// <summary>The raw bytes of the elements (contiguous, little-endian, on CPU).</summary>
    public byte[] ToBytes()
    {
        var result = new byte[NumEl * ElementSize];
        fixed (byte* p = result) Check(sdt_tensor_copy_out(Handle, p, result.Length));
        return result;
    }

    private void CheckElementType<T>() where T : unmanaged
    {
        if (sizeof(T) != DType.ElementSize())
            throw new ArgumentException($"{typeof(T).Name} does not match a {DType.TorchName()} tensor ({DType.ElementSize()}-byte elements)");
    }

    /// <summary>The single value of a one-element tensor.</summary>
    public double Item()
    {
        var v = sdt_tensor_item_double(Handle);
        ThrowIfError();
        return v;
    }

    public long ItemInt64()
    {
        var v = sdt_tensor_item_int64(Handle);
        ThrowIfError();
        return v;
    }

    public override string ToString() =>
        IsDisposed ? "Tensor(disposed)" : $"Tensor(shape=[{string.Join(", ", Shape)}], dtype={DType.TorchName()}, device={Device})";

    /// <summary>libtorch's printout of the values.</summary>
    public string ToDataString() => Marshal.PtrToStringUTF8(CheckHandle(sdt_tensor_to_string(Handle))) ?? "";

    // ---- autograd ----
    public bool RequiresGrad
    {
        get => Check(sdt_tensor_requires_grad(Handle)) != 0;
        set => Check(sdt_tensor_set_requires_grad(Handle, value ? 1 : 0));
    }

    /// <summary>Sets requires_grad in place and returns this tensor, as <c>requires_grad_()</c>.</summary>
    public Tensor RequiresGrad_(bool value = true)
    {
        RequiresGrad = value;
        return this;
    }

    public bool IsLeaf => Check(sdt_tensor_is_leaf(Handle)) != 0;

    public bool HasGradFn => Check(sdt_tensor_has_grad_fn(Handle)) != 0;

    /// <summary>The accumulated gradient, or null when none was computed. Each read is a new handle: dispose it.</summary>
    public Tensor? Grad
    {
        get
        {
            var h = sdt_tensor_grad(Handle);
            if (h == IntPtr.Zero)
            {
                ThrowIfError();
                return null;
            }
            return new Tensor(h);
        }
        set => Check(sdt_tensor_set_grad(Handle, value?.Handle ?? IntPtr.Zero));
    }

    /// <summary>Drops the gradient (set_to_none, PyTorch's default for zero_grad).</summary>
    public void ZeroGrad() => Grad = null;

    /// <summary>Back-propagates from this tensor (a scalar, or pass <paramref name="gradient"/>).</summary>
    public void Backward(Tensor? gradient = null, bool retainGraph = false, bool createGraph = false) =>
        Autograd.Backward([this], gradient is null ? null : [gradient], retainGraph, createGraph);
}
