using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using static SdAppliance.Torch.Native.LibSdTorch;

namespace SdAppliance.Torch;

/// <summary>Autograd entry points: backward, grad-mode scopes, autocast and gradient checkpointing.</summary>
public static unsafe class Autograd
{
    /// <summary>torch.autograd.backward: accumulates gradients of <paramref name="tensors"/> into the leaves.</summary>
    public static void Backward(IReadOnlyList<Tensor> tensors, IReadOnlyList<Tensor?>? gradients = null, bool retainGraph = false, bool createGraph = false)
    {
        if (gradients is not null && gradients.Count != tensors.Count)
            throw new ArgumentException($"{tensors.Count} tensors but {gradients.Count} gradients", nameof(gradients));
        var outs = new IntPtr[tensors.Count];
        var grads = new IntPtr[tensors.Count];
        for (var i = 0; i < outs.Length; i++)
        {
            outs[i] = tensors[i].Handle;
            grads[i] = gradients?[i]?.Handle ?? IntPtr.Zero;
        }
        fixed (IntPtr* o = outs)
        fixed (IntPtr* g = grads)
            Check(sdt_backward(o, g, outs.Length, retainGraph ? 1 : 0, createGraph ? 1 : 0));
    }

    public static bool IsGradEnabled
    {
        get => Check(sdt_grad_enabled()) != 0;
        set => Check(sdt_set_grad_enabled(value ? 1 : 0));
    }

    public static bool IsInferenceMode => Check(sdt_is_inference_mode()) != 0;

    /// <summary>Like <c>with torch.no_grad():</c> for the lifetime of the returned scope.</summary>
    public static GradModeScope NoGrad() => new(false);

    /// <summary>Like <c>with torch.enable_grad():</c>.</summary>
    public static GradModeScope EnableGrad() => new(true);

    /// <summary>Like <c>with torch.inference_mode():</c>: faster than no_grad; tensors made inside never join autograd.</summary>
    public static InferenceModeScope InferenceMode(bool enabled = true) => new(enabled);

    /// <summary>
    /// Like <c>torch.autocast(device_type, dtype)</c>: matmuls and convolutions run in the low
    /// precision dtype (bfloat16 or float16 on CUDA; bfloat16 on CPU), reductions stay in float32.
    /// </summary>
    public static AutocastScope Autocast(DeviceType deviceType, DType dtype, bool enabled = true) => new(deviceType, dtype, enabled);

    public static bool IsAutocastEnabled(DeviceType deviceType) => Check(sdt_autocast_enabled((int)deviceType)) != 0;

    /// <summary>
    /// Gradient checkpointing of one call, as torch.utils.checkpoint (reentrant): the forward pass
    /// keeps no activations; backward runs <paramref name="function"/> again with the random
    /// generators restored, so dropout draws the same masks. Parameters used inside receive
    /// their gradients as usual.
    /// </summary>
    public static Tensor[] Checkpoint(Func<Tensor[], Tensor[]> function, params Tensor[] inputs)
    {
        // The graph keeps only this handle's address and calls back through it in backward; the
        // shim releases it when the graph node dies (at once if nothing required grad).
        var state = GCHandle.Alloc(function);
        var ins = new IntPtr[inputs.Length];
        for (var i = 0; i < ins.Length; i++) ins[i] = inputs[i].Handle;
        var outs = new IntPtr[MaxCheckpointOutputs];
        int n;
        fixed (IntPtr* pi = ins)
        fixed (IntPtr* po = outs)
            n = Check(sdt_checkpoint(&CheckpointForward, &ReleaseHandle, GCHandle.ToIntPtr(state), pi, ins.Length, po, outs.Length));
        var result = new Tensor[n];
        for (var i = 0; i < n; i++) result[i] = new Tensor(outs[i]);
        return result;
    }

    /// <summary>Checkpoints a call with one input and one output.</summary>
    public static Tensor Checkpoint(Func<Tensor, Tensor> function, Tensor input) =>
        Checkpoint(xs => [function(xs[0])], input)[0];

    private const int MaxCheckpointOutputs = 64;

    [UnmanagedCallersOnly]
    internal static void ReleaseHandle(IntPtr context) => GCHandle.FromIntPtr(context).Free();

    [UnmanagedCallersOnly]
    private static int CheckpointForward(IntPtr context, IntPtr* inputs, int nIn, IntPtr* outputs, int maxOut)
    {
        try
        {
            var function = (Func<Tensor[], Tensor[]>)GCHandle.FromIntPtr(context).Target!;
            var args = new Tensor[nIn];
            for (var i = 0; i < nIn; i++) args[i] = new Tensor(sdt_tensor_alias(inputs[i])).DetachFromDisposeScope();
            Tensor[] results;
            using (var scope = new DisposeScope())
            {
                results = function(args);
                foreach (var r in results) r.DetachFromDisposeScope();
            }
            if (results.Length > maxOut) throw new InvalidOperationException($"a checkpointed function may return at most {maxOut} tensors");
            for (var i = 0; i < results.Length; i++)
            {
                outputs[i] = sdt_tensor_alias(results[i].Handle);
                results[i].Dispose();
            }
            foreach (var a in args) a.Dispose();
            return results.Length;
        }
        catch (Exception e)
        {
            sdt_set_error($"checkpointed function threw {e.GetType().Name}: {e.Message}");
            return -1;
        }
    }
}

public readonly struct GradModeScope : IDisposable
{
    private readonly bool previous;

    internal GradModeScope(bool enabled)
    {
        previous = Autograd.IsGradEnabled;
        Autograd.IsGradEnabled = enabled;
    }

    public void Dispose() => Autograd.IsGradEnabled = previous;
}

public sealed class InferenceModeScope : IDisposable
{
    private IntPtr guard;

    internal InferenceModeScope(bool enabled) => guard = CheckHandle(sdt_inference_mode_enter(enabled ? 1 : 0));

    public void Dispose()
    {
        var g = Interlocked.Exchange(ref guard, IntPtr.Zero);
        if (g != IntPtr.Zero) Check(sdt_inference_mode_exit(g));
    }
}

public sealed class AutocastScope : IDisposable
{
    private IntPtr guard;

    internal AutocastScope(DeviceType deviceType, DType dtype, bool enabled) =>
        guard = CheckHandle(sdt_autocast_enter((int)deviceType, (int)dtype, enabled ? 1 : 0));

    public void Dispose()
    {
        var g = Interlocked.Exchange(ref guard, IntPtr.Zero);
        if (g != IntPtr.Zero) Check(sdt_autocast_exit(g));
    }
}
