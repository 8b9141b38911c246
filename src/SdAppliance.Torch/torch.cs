using System.Runtime.InteropServices;
using SdAppliance.Torch.Native;
using static SdAppliance.Torch.Native.LibSdTorch;

#pragma warning disable CS8981 // lower-case like PyTorch's `torch` namespace (and TorchSharp's), so calls read torch.Zeros(...)
namespace SdAppliance.Torch;

/// <summary>The <c>torch.*</c> namespace: tensor creation, random sampling, seeding and joining.</summary>
public static unsafe partial class torch
{
    private static readonly Device DefaultDevice = Device.Cpu;

    /// <summary>Opens a scope that frees every tensor created inside it when disposed.</summary>
    public static DisposeScope NewDisposeScope() => new();

    // ---- data in ----
    /// <summary>A new CPU tensor holding a copy of <paramref name="data"/>.</summary>
    public static Tensor FromArray<T>(ReadOnlySpan<T> data, ReadOnlySpan<long> shape, DType dtype) where T : unmanaged
    {
        if (sizeof(T) != dtype.ElementSize())
            throw new ArgumentException($"{typeof(T).Name} elements cannot fill a {dtype.TorchName()} tensor");
        fixed (T* p = data)
        fixed (long* s = shape)
            return new Tensor(sdt_tensor_from_data(p, (long)data.Length * sizeof(T), s, shape.Length, (int)dtype));
    }

    public static Tensor Tensor(float[] data, params long[] shape) => FromArray<float>(data, shape.Length == 0 ? [data.Length] : shape, DType.Float32);
    public static Tensor Tensor(double[] data, params long[] shape) => FromArray<double>(data, shape.Length == 0 ? [data.Length] : shape, DType.Float64);
    public static Tensor Tensor(long[] data, params long[] shape) => FromArray<long>(data, shape.Length == 0 ? [data.Length] : shape, DType.Int64);
    public static Tensor Tensor(int[] data, params long[] shape) => FromArray<int>(data, shape.Length == 0 ? [data.Length] : shape, DType.Int32);
    public static Tensor Tensor(byte[] data, params long[] shape) => FromArray<byte>(data, shape.Length == 0 ? [data.Length] : shape, DType.UInt8);

    public static Tensor Tensor(bool[] data, params long[] shape)
    {
        var bytes = new byte[data.Length];
        for (var i = 0; i < data.Length; i++) bytes[i] = data[i] ? (byte)1 : (byte)0;
        return FromArray<byte>(bytes, shape.Length == 0 ? [data.Length] : shape, DType.Bool);
    }

    /// <summary>A new CPU tensor from raw little-endian bytes of <paramref name="dtype"/> elements.</summary>
    public static Tensor FromBytes(ReadOnlySpan<byte> data, ReadOnlySpan<long> shape, DType dtype)
    {
        fixed (byte* p = data)
        fixed (long* s = shape)
            return new Tensor(sdt_tensor_from_data(p, data.Length, s, shape.Length, (int)dtype));
    }

    /// <summary>A zero-dimensional tensor.</summary>
    public static Tensor Scalar(double value, DType dtype = DType.Float32, Device? device = null) => Full([], value, dtype, device);

    /// <summary>
    /// Wraps memory the caller owns (a memory-mapped file, a pinned buffer) as a CPU tensor
    /// without copying. <paramref name="release"/> runs once libtorch no longer uses the memory.
    /// </summary>
    public static Tensor FromExternalMemory(IntPtr data, ReadOnlySpan<long> shape, DType dtype, Action? release = null)
    {
        var context = release is null ? IntPtr.Zero : GCHandle.ToIntPtr(GCHandle.Alloc(release));
        fixed (long* s = shape)
            return new Tensor(sdt_tensor_from_external((void*)data, s, shape.Length, (int)dtype, &ReleaseExternal, context));
    }

    [UnmanagedCallersOnly]
    private static void ReleaseExternal(IntPtr context)
    {
        if (context == IntPtr.Zero) return;
        var handle = GCHandle.FromIntPtr(context);
        var release = (Action)handle.Target!;
        handle.Free();
        release();
    }

    // ---- creation ----
    private static OpCall Options(this OpCall call, DType dtype, Device? device) =>
        call.DT(dtype).None().Dev(device ?? DefaultDevice).None();

    public static Tensor Zeros(ReadOnlySpan<long> shape, DType dtype = DType.Float32, Device? device = null) =>
        Op.Get("aten::zeros").Begin().Ints(shape).Options(dtype, device).Call();

    public static Tensor Ones(ReadOnlySpan<long> shape, DType dtype = DType.Float32, Device? device = null) =>
        Op.Get("aten::ones").Begin().Ints(shape).Options(dtype, device).Call();

    public static Tensor Empty(ReadOnlySpan<long> shape, DType dtype = DType.Float32, Device? device = null) =>
        Op.Get("aten::empty", "memory_format").Begin().Ints(shape).Options(dtype, device).Call();

    public static Tensor Full(ReadOnlySpan<long> shape, double value, DType dtype = DType.Float32, Device? device = null) =>
        Op.Get("aten::full").Begin().Ints(shape).D(value).Options(dtype, device).Call();

    public static Tensor Arange(double end, DType dtype = DType.Int64, Device? device = null) => Arange(0, end, 1, dtype, device);

    public static Tensor Arange(double start, double end, double step = 1, DType dtype = DType.Int64, Device? device = null) =>
        Op.Get("aten::arange", "start_step").Begin().D(start).D(end).D(step).Options(dtype, device).Call();

    public static Tensor Linspace(double start, double end, long steps, DType dtype = DType.Float32, Device? device = null) =>
        Op.Get("aten::linspace").Begin().D(start).D(end).I(steps).Options(dtype, device).Call();

    // ---- random (the same draws as PyTorch on CPU for the same generator state) ----
    public static Tensor Randn(ReadOnlySpan<long> shape, Generator? generator = null, DType dtype = DType.Float32, Device? device = null) =>
        Op.Get("aten::randn", "generator").Begin().Ints(shape).Gen(generator).Options(dtype, device).Call();

    public static Tensor Rand(ReadOnlySpan<long> shape, Generator? generator = null, DType dtype = DType.Float32, Device? device = null) =>
        Op.Get("aten::rand", "generator").Begin().Ints(shape).Gen(generator).Options(dtype, device).Call();

    /// <summary>Integers drawn uniformly from [low, high).</summary>
    public static Tensor Randint(long low, long high, ReadOnlySpan<long> shape, Generator? generator = null, DType dtype = DType.Int64, Device? device = null) =>
        Op.Get("aten::randint", "low_generator").Begin().I(low).I(high).Ints(shape).Gen(generator).Options(dtype, device).Call();

    /// <summary>A random permutation of 0..n-1.</summary>
    public static Tensor Randperm(long n, Generator? generator = null, Device? device = null) =>
        Op.Get("aten::randperm", "generator").Begin().I(n).Gen(generator).Options(DType.Int64, device).Call();

    /// <summary>Samples N(mean, std) of the given shape.</summary>
    public static Tensor Normal(double mean, double std, ReadOnlySpan<long> shape, Generator? generator = null, DType dtype = DType.Float32, Device? device = null) =>
        Op.Get("aten::normal", "float_float").Begin().D(mean).D(std).Ints(shape).Gen(generator).Options(dtype, device).Call();

    public static Tensor RandnLike(Tensor like, Generator? generator = null) => Randn(like.Shape, generator, like.DType, like.Device);
    public static Tensor ZerosLike(Tensor like) => Zeros(like.Shape, like.DType, like.Device);
    public static Tensor OnesLike(Tensor like) => Ones(like.Shape, like.DType, like.Device);
    public static Tensor FullLike(Tensor like, double value) => Full(like.Shape, value, like.DType, like.Device);
    public static Tensor EmptyLike(Tensor like) => Empty(like.Shape, like.DType, like.Device);

    /// <summary>Seeds every default generator (CPU and CUDA), as torch.manual_seed.</summary>
    public static void ManualSeed(ulong seed) => Check(sdt_manual_seed(seed));

    // ---- joining ----
    public static Tensor Cat(IReadOnlyList<Tensor> tensors, long dim = 0) => Op.Get("aten::cat").Begin().Tensors(tensors).I(dim).Call();

    public static Tensor Stack(IReadOnlyList<Tensor> tensors, long dim = 0) => Op.Get("aten::stack").Begin().Tensors(tensors).I(dim).Call();

    /// <summary>Elementwise choice: <paramref name="condition"/> ? <paramref name="x"/> : <paramref name="y"/>.</summary>
    public static Tensor Where(Tensor condition, Tensor x, Tensor y) => Op.Get("aten::where", "self").Begin().T(condition).T(x).T(y).Call();

    // ---- operations also spelled torch.* ----
    public static Tensor Matmul(Tensor input, Tensor other) => input.Matmul(other);
    public static Tensor Bmm(Tensor input, Tensor mat2) => input.Bmm(mat2);

    /// <summary>beta·input + alpha·(batch1 @ batch2).</summary>
    public static Tensor Baddbmm(Tensor input, Tensor batch1, Tensor batch2, double beta = 1, double alpha = 1) => input.Baddbmm(batch1, batch2, beta, alpha);

    /// <summary>beta·input + alpha·(mat1 @ mat2), for matrices.</summary>
    public static Tensor Addmm(Tensor input, Tensor mat1, Tensor mat2, double beta = 1, double alpha = 1) => input.Addmm(mat1, mat2, beta, alpha);

    public static Tensor Where(Tensor condition, Tensor x, double y) => Op.Get("aten::where", "ScalarOther").Begin().T(condition).T(x).D(y).Call();
    public static Tensor Where(Tensor condition, double x, Tensor y) => Op.Get("aten::where", "ScalarSelf").Begin().T(condition).D(x).T(y).Call();
    public static Tensor Maximum(Tensor input, Tensor other) => input.Maximum(other);
    public static Tensor Minimum(Tensor input, Tensor other) => input.Minimum(other);

    /// <summary>baseValue ** exponent, elementwise.</summary>
    public static Tensor Pow(double baseValue, Tensor exponent) => Op.Get("aten::pow", "Scalar").Begin().D(baseValue).T(exponent).Call();

    public static bool Allclose(Tensor input, Tensor other, double rtol = 1e-5, double atol = 1e-8, bool equalNan = false) =>
        input.Allclose(other, rtol, atol, equalNan);
}
