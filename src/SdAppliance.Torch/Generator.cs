using static SdAppliance.Torch.Native.LibSdTorch;

namespace SdAppliance.Torch;

/// <summary>
/// A random number generator, as <c>torch.Generator(device).manual_seed(n)</c>: on CPU the
/// same seed gives the same numbers as PyTorch (the same Mersenne Twister and sampling code).
/// </summary>
public sealed class Generator : IDisposable
{
    private IntPtr handle;

    private Generator(IntPtr handle, Device device)
    {
        this.handle = CheckHandle(handle);
        Device = device;
    }

    ~Generator() => Free();

    public Generator(Device device, ulong seed = 67280421310721UL)
        : this(sdt_generator_new((int)device.Type, device.Index, seed), device)
    {
    }

    /// <summary>A CPU generator seeded with <paramref name="seed"/>.</summary>
    public Generator(ulong seed) : this(Device.Cpu, seed) { }

    /// <summary>The process-wide default generator of a device (what torch.randn uses without a generator).</summary>
    public static Generator Default(Device device) => new(sdt_generator_default((int)device.Type, device.Index), device);

    public Device Device { get; }

    internal IntPtr Handle => handle != IntPtr.Zero ? handle : throw new ObjectDisposedException(nameof(Generator));

    public Generator ManualSeed(ulong seed)
    {
        Check(sdt_generator_manual_seed(Handle, seed));
        return this;
    }

    public ulong InitialSeed
    {
        get
        {
            var seed = sdt_generator_initial_seed(Handle);
            ThrowIfError();
            return seed;
        }
    }

    /// <summary>The full generator state as a uint8 tensor (PyTorch's <c>get_state()</c>); save it to resume exactly.</summary>
    public Tensor GetState() => new(sdt_generator_get_state(Handle));

    public void SetState(Tensor state) => Check(sdt_generator_set_state(Handle, state.Handle));

    /// <summary>The state as bytes, for checkpoints.</summary>
    public byte[] GetStateBytes()
    {
        using var state = GetState();
        return state.ToBytes();
    }

    public void SetStateBytes(byte[] state)
    {
        using var t = torch.FromArray<byte>(state, [state.Length], DType.UInt8);
        SetState(t);
    }

    private void Free()
    {
        var h = Interlocked.Exchange(ref handle, IntPtr.Zero);
        if (h != IntPtr.Zero) sdt_generator_free(h);
    }

    public void Dispose()
    {
        Free();
        GC.SuppressFinalize(this);
    }
}
