using static SdAppliance.Torch.Native.LibSdTorch;

namespace SdAppliance.Torch.Native;

/// <summary>
/// Times operations through libtorch's C++ API inside the shim, with no binding in between, so a
/// benchmark can put what the binding achieves next to what C++ achieves on the same tensors.
/// </summary>
public static unsafe class NativeTimer
{
    /// <summary>SDT_BENCH_*, in sdtorch.h's numbering; the comment lists each one's inputs.</summary>
    public enum Operation
    {
        /// <summary>a, b: a + b, the typed C++ call.</summary>
        Add = 0,

        /// <summary>a, b: aten::add.Tensor through the dispatcher's boxed call, as the shim makes it.</summary>
        AddBoxed = 1,

        /// <summary>x, w: conv2d, stride 1, padding 1.</summary>
        Conv2d = 2,

        /// <summary>x, w: conv2d as above, sum, backward; the gradients are dropped each time.</summary>
        Conv2dBackward = 3,

        /// <summary>x, w: linear without bias.</summary>
        Linear = 4,

        /// <summary>q, k, v: scaled dot-product attention (libtorch's own kernel where it has one).</summary>
        Attention = 5,

        /// <summary>a, b: a + b through the shim's packed operator call, from C++ (the shim's cost without .NET).</summary>
        AddShim = 6,
    }

    /// <summary>Seconds that <paramref name="iterations"/> runs of the operation took.</summary>
    public static double Seconds(Operation operation, int iterations, params Tensor[] inputs)
    {
        var handles = stackalloc IntPtr[inputs.Length];
        for (var i = 0; i < inputs.Length; i++) handles[i] = inputs[i].Handle;
        var seconds = sdt_bench_native((int)operation, handles, inputs.Length, iterations);
        GC.KeepAlive(inputs);
        if (seconds < 0) ThrowIfError();
        return seconds;
    }
}
