using System.Runtime.InteropServices;

namespace SdAppliance.Torch.Native;

/// <summary>P/Invoke declarations of libsdtorch (src/libsdtorch/sdtorch.h), one line per C function.</summary>
internal static unsafe partial class LibSdTorch
{
    private const string Lib = "sdtorch";

    // Before the first call of any entry point (CLI, tools, library users): the OpenMP wait policy must be in the
    // environment before libgomp loads, and libtorch would otherwise count physical cores through cpuinfo
    // (1 on some VMs) and run everything on one thread.
    static LibSdTorch() => Engine.ConfigureBeforeFirstCall();

    [LibraryImport(Lib)] internal static partial IntPtr sdt_last_error();
    [LibraryImport(Lib)] internal static partial void sdt_clear_error();
    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)] internal static partial void sdt_set_error(string message);

    [LibraryImport(Lib)] internal static partial IntPtr sdt_torch_version();
    [LibraryImport(Lib)] internal static partial IntPtr sdt_torch_library_path();
    [LibraryImport(Lib)] internal static partial int sdt_get_num_threads();
    [LibraryImport(Lib)] internal static partial int sdt_set_num_threads(int n);
    [LibraryImport(Lib)] internal static partial int sdt_has_native_sdpa();
    [LibraryImport(Lib)] internal static partial int sdt_cuda_is_available();
    [LibraryImport(Lib)] internal static partial int sdt_cuda_device_count();
    [LibraryImport(Lib)] internal static partial int sdt_cuda_compiled();
    [LibraryImport(Lib)] internal static partial int sdt_cuda_device_info(int index, byte* name, int nameLength, long* totalBytes, long* freeBytes);
    [LibraryImport(Lib)] internal static partial int sdt_cuda_memory_stats(int index, long* out4);
    [LibraryImport(Lib)] internal static partial int sdt_cuda_reset_peak_memory_stats(int index);
    [LibraryImport(Lib)] internal static partial int sdt_cuda_empty_cache();
    [LibraryImport(Lib)] internal static partial int sdt_cuda_synchronize(int index);

    [LibraryImport(Lib)] internal static partial void sdt_tensor_free(IntPtr t);
    [LibraryImport(Lib)] internal static partial IntPtr sdt_tensor_alias(IntPtr t);
    [LibraryImport(Lib)] internal static partial int sdt_tensor_dim(IntPtr t);
    [LibraryImport(Lib)] internal static partial int sdt_tensor_sizes(IntPtr t, long* output, int capacity);
    [LibraryImport(Lib)] internal static partial int sdt_tensor_strides(IntPtr t, long* output, int capacity);
    [LibraryImport(Lib)] internal static partial long sdt_tensor_numel(IntPtr t);
    [LibraryImport(Lib)] internal static partial int sdt_tensor_dtype(IntPtr t);
    [LibraryImport(Lib)] internal static partial int sdt_tensor_device(IntPtr t, int* index);
    [LibraryImport(Lib)] internal static partial long sdt_tensor_element_size(IntPtr t);
    [LibraryImport(Lib)] internal static partial int sdt_tensor_is_contiguous(IntPtr t);
    [LibraryImport(Lib)] internal static partial IntPtr sdt_tensor_data_ptr(IntPtr t);
    [LibraryImport(Lib)] internal static partial int sdt_tensor_same(IntPtr a, IntPtr b);
    [LibraryImport(Lib)] internal static partial IntPtr sdt_tensor_from_data(void* data, long bytes, long* shape, int ndim, int dtype);
    [LibraryImport(Lib)] internal static partial IntPtr sdt_tensor_from_external(void* data, long* shape, int ndim, int dtype, delegate* unmanaged<IntPtr, void> release, IntPtr context);
    [LibraryImport(Lib)] internal static partial int sdt_tensor_copy_out(IntPtr t, void* destination, long bytes);
    [LibraryImport(Lib)] internal static partial double sdt_tensor_item_double(IntPtr t);
    [LibraryImport(Lib)] internal static partial long sdt_tensor_item_int64(IntPtr t);
    [LibraryImport(Lib)] internal static partial IntPtr sdt_tensor_to_string(IntPtr t);

    [LibraryImport(Lib)] internal static partial int sdt_tensor_requires_grad(IntPtr t);
    [LibraryImport(Lib)] internal static partial int sdt_tensor_set_requires_grad(IntPtr t, int value);
    [LibraryImport(Lib)] internal static partial int sdt_tensor_is_leaf(IntPtr t);
    [LibraryImport(Lib)] internal static partial IntPtr sdt_tensor_grad(IntPtr t);
    [LibraryImport(Lib)] internal static partial int sdt_tensor_set_grad(IntPtr t, IntPtr grad);
    [LibraryImport(Lib)] internal static partial int sdt_tensor_has_grad_fn(IntPtr t);
    [LibraryImport(Lib)] internal static partial int sdt_backward(IntPtr* tensors, IntPtr* grads, int n, int retainGraph, int createGraph);
    [LibraryImport(Lib)] internal static partial int sdt_grad_enabled();
    [LibraryImport(Lib)] internal static partial int sdt_set_grad_enabled(int enabled);
    [LibraryImport(Lib)] internal static partial IntPtr sdt_inference_mode_enter(int enabled);
    [LibraryImport(Lib)] internal static partial int sdt_inference_mode_exit(IntPtr guard);
    [LibraryImport(Lib)] internal static partial int sdt_is_inference_mode();
    [LibraryImport(Lib)] internal static partial IntPtr sdt_autocast_enter(int deviceType, int dtype, int enabled);
    [LibraryImport(Lib)] internal static partial int sdt_autocast_exit(IntPtr guard);
    [LibraryImport(Lib)] internal static partial int sdt_autocast_enabled(int deviceType);
    [LibraryImport(Lib)] internal static partial int sdt_checkpoint(delegate* unmanaged<IntPtr, IntPtr*, int, IntPtr*, int, int> forward, delegate* unmanaged<IntPtr, void> release, IntPtr context, IntPtr* inputs, int nIn, IntPtr* outputs, int maxOut);

    [LibraryImport(Lib)] internal static partial IntPtr sdt_generator_new(int deviceType, int deviceIndex, ulong seed);
    [LibraryImport(Lib)] internal static partial IntPtr sdt_generator_default(int deviceType, int deviceIndex);
    [LibraryImport(Lib)] internal static partial void sdt_generator_free(IntPtr g);
    [LibraryImport(Lib)] internal static partial int sdt_generator_manual_seed(IntPtr g, ulong seed);
    [LibraryImport(Lib)] internal static partial ulong sdt_generator_initial_seed(IntPtr g);
    [LibraryImport(Lib)] internal static partial IntPtr sdt_generator_get_state(IntPtr g);
    [LibraryImport(Lib)] internal static partial int sdt_generator_set_state(IntPtr g, IntPtr state);
    [LibraryImport(Lib)] internal static partial int sdt_manual_seed(ulong seed);

    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)] internal static partial IntPtr sdt_op_find(string name, string overload);
    [LibraryImport(Lib)] internal static partial int sdt_op_schema(IntPtr op, byte* buffer, int capacity);
    [LibraryImport(Lib)] internal static partial int sdt_op_call(IntPtr op, Arg* args, int nArgs, IntPtr* outputs, int maxOutputs, double* scalar);
    [LibraryImport(Lib)] internal static partial int sdt_op_take_outputs(IntPtr* output, int capacity);
    [LibraryImport(Lib)] internal static partial int sdt_op_check(IntPtr op, Arg* args, int nArgs);

    [LibraryImport(Lib)] internal static partial IntPtr sdt_scaled_dot_product_attention(IntPtr q, IntPtr k, IntPtr v, IntPtr mask, double dropoutP, int isCausal, double scale);

    [LibraryImport(Lib)] internal static partial double sdt_bench_native(int kind, IntPtr* inputs, int nInputs, int iterations);

    [LibraryImport(Lib)] internal static partial int sdt_optim_8bit_step_cpu(int algorithm, IntPtr param, IntPtr grad, IntPtr state1, IntPtr absmax1,
        IntPtr state2, IntPtr absmax2, IntPtr code1, IntPtr bounds1, IntPtr start1, IntPtr code2, IntPtr bounds2, IntPtr start2, double beta1, double beta2, double eps, double lr,
        double weightDecay, double stepSize, double correction2);

    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)] internal static partial IntPtr sdt_tcp_store_new(string host, int port, int worldSize, int isServer, long timeoutMs);
    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)] internal static partial IntPtr sdt_prefix_store_new(string prefix, IntPtr inner);
    [LibraryImport(Lib)] internal static partial void sdt_store_free(IntPtr store);
    [LibraryImport(Lib)] internal static partial int sdt_store_port(IntPtr store);
    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)] internal static partial int sdt_store_set(IntPtr store, string key, byte* data, long length);
    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)] internal static partial long sdt_store_get(IntPtr store, string key, byte* buffer, long capacity);
    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)] internal static partial long sdt_store_add(IntPtr store, string key, long delta);
    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)] internal static partial int sdt_store_check(IntPtr store, string key);
    [LibraryImport(Lib)] internal static partial int sdt_store_set_timeout(IntPtr store, long timeoutMs);
    [LibraryImport(Lib)] internal static partial int sdt_nccl_available();
    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)] internal static partial IntPtr sdt_process_group_new(IntPtr store, int backend, int rank, int worldSize, long timeoutMs, string? hostname);
    [LibraryImport(Lib)] internal static partial void sdt_process_group_free(IntPtr group);
    [LibraryImport(Lib)] internal static partial int sdt_all_reduce(IntPtr group, IntPtr* tensors, int n, int op);
    [LibraryImport(Lib)] internal static partial int sdt_broadcast(IntPtr group, IntPtr* tensors, int n, int root, long bucketBytes);
    [LibraryImport(Lib)] internal static partial int sdt_all_gather(IntPtr group, IntPtr input, IntPtr* outputs, int nOutputs);
    [LibraryImport(Lib)] internal static partial int sdt_barrier(IntPtr group);
    [LibraryImport(Lib)] internal static partial IntPtr sdt_grad_buckets_new(IntPtr group, IntPtr* parameters, int n, long bucketBytes, long firstBucketBytes, int op);
    [LibraryImport(Lib)] internal static partial int sdt_grad_buckets_count(IntPtr buckets);
    [LibraryImport(Lib)] internal static partial int sdt_grad_buckets_prepare(IntPtr buckets);
    [LibraryImport(Lib)] internal static partial int sdt_grad_buckets_finish(IntPtr buckets);
    [LibraryImport(Lib)] internal static partial void sdt_grad_buckets_free(IntPtr buckets);

    [LibraryImport(Lib)] internal static partial int sdt_optim_adam_step_cpu(IntPtr* params_, IntPtr* grads, IntPtr* expAvgs, IntPtr* expAvgSqs,
        IntPtr* maxExpAvgSqs, int n, double lr, double beta1, double beta2, double eps, double weightDecay, int decoupled, int maximize,
        double stepSize, double biasCorrection2Sqrt);

    /// <summary>sdt_arg: one argument of a packed operator call.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 16)]
    internal struct Arg
    {
        [FieldOffset(0)] public ArgKind Kind;
        [FieldOffset(4)] public int Count;
        [FieldOffset(8)] public long I;
        [FieldOffset(8)] public double D;
        [FieldOffset(8)] public IntPtr P;
    }

    /// <summary>SDT_ARG_*, in sdtorch.h's numbering.</summary>
    internal enum ArgKind
    {
        None = 0,
        Default = 1,
        Tensor = 2,
        Int = 3,
        Double = 4,
        Bool = 5,
        String = 6,
        IntList = 7,
        DoubleList = 8,
        BoolList = 9,
        TensorList = 10,
        Device = 11,
        Generator = 12,
        ScalarType = 13,
    }

    internal static string? LastError()
    {
        var p = sdt_last_error();
        return p == IntPtr.Zero ? null : Marshal.PtrToStringUTF8(p);
    }

    /// <summary>Throws the shim's recorded error, if any.</summary>
    internal static void ThrowIfError()
    {
        var message = LastError();
        if (message is not null)
        {
            sdt_clear_error();
            throw new TorchException(message);
        }
    }

    internal static int Check(int status)
    {
        if (status < 0) ThrowIfError();
        return status;
    }

    internal static long Check(long status)
    {
        if (status < 0) ThrowIfError();
        return status;
    }

    /// <summary>A handle that must exist: NULL means the call failed.</summary>
    internal static IntPtr CheckHandle(IntPtr handle)
    {
        if (handle == IntPtr.Zero)
        {
            ThrowIfError();
            throw new TorchException("libsdtorch returned no result and no error");
        }
        return handle;
    }
}
