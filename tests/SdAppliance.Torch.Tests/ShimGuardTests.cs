using SdAppliance.Torch.Native;
using static SdAppliance.Torch.Native.LibSdTorch;

namespace SdAppliance.Torch.Tests;

/// <summary>
/// No C++ exception crosses the shim: a failing entry point (metadata getters and list pushes ran
/// outside the guard once, where a NULL handle ended the process) becomes a TorchException carrying
/// libtorch's message, and the engine goes on working.
/// </summary>
public unsafe class ShimGuardTests
{
    [Fact]
    public void ALibtorchErrorSurfacesAsTorchExceptionAndTheEngineGoesOn()
    {
        using var t = torch.Zeros([2, 2]);
        var e = Assert.Throws<TorchException>(() => t.Item());
        Assert.Contains("4 elements", e.Message);
        using var sum = t.Add(1).Sum();
        Assert.Equal(4.0, sum.Item());
    }

    [Fact]
    public void MetadataGettersRefuseANullHandle()
    {
        foreach (var call in new Func<long>[]
                 {
                     () => sdt_tensor_dim(IntPtr.Zero),
                     () => sdt_tensor_numel(IntPtr.Zero),
                     () => sdt_tensor_dtype(IntPtr.Zero),
                     () => sdt_tensor_element_size(IntPtr.Zero),
                     () => sdt_tensor_is_contiguous(IntPtr.Zero),
                     () => sdt_tensor_requires_grad(IntPtr.Zero),
                     () => sdt_tensor_is_leaf(IntPtr.Zero),
                     () => sdt_tensor_has_grad_fn(IntPtr.Zero),
                     () => { int index; return sdt_tensor_device(IntPtr.Zero, &index); },
                 })
        {
            var e = Assert.Throws<TorchException>(() => Check(call()));
            Assert.Contains("NULL tensor handle", e.Message);
        }
        using var t = torch.Ones([3]);
        Assert.Equal(3, t.NumEl);
    }

    [Fact]
    public void ATensorListWithANullHandleIsRefused()
    {
        using var a = torch.Ones([2]);
        var handles = stackalloc IntPtr[] { a.Handle, IntPtr.Zero };
        var args = stackalloc Arg[2];
        args[0] = new Arg { Kind = ArgKind.TensorList, Count = 2, P = (IntPtr)handles };
        args[1] = new Arg { Kind = ArgKind.Int, I = 0 };
        IntPtr output;
        var status = sdt_op_call(Op.Get("aten::cat").Handle, args, 2, &output, 1, null);
        Assert.Equal(-1, status);
        Assert.Contains("NULL tensor handle", Assert.Throws<TorchException>(ThrowIfError).Message);
    }

    [Fact]
    public void SizesAndStridesRefuseABufferTooSmall()
    {
        using var t = torch.Zeros([2, 3, 4]);
        var buffer = stackalloc long[2];
        Assert.Equal(-1, sdt_tensor_sizes(t.Handle, buffer, 2));
        Assert.Contains("3 dimensions, the buffer holds 2", Assert.Throws<TorchException>(ThrowIfError).Message);
        Assert.Equal(-1, sdt_tensor_strides(t.Handle, buffer, 2));
        Assert.Throws<TorchException>(ThrowIfError);
        Assert.Equal([2L, 3L, 4L], t.Shape);
        Assert.Equal([12L, 4L, 1L], t.Strides);
    }

    [Fact]
    public void TheSchemaTextIsCutToTheBuffer()
    {
        var op = Op.Get("aten::add", "Tensor");
        var buffer = stackalloc byte[8];
        var length = sdt_op_schema(op.Handle, buffer, 8);
        Assert.Equal(op.Schema.Length, length);
        Assert.Equal("aten::a", new string((sbyte*)buffer));
    }
}
