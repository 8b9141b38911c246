using static SdAppliance.Torch.Native.LibSdTorch;

namespace SdAppliance.Torch.Optim;

/// <summary>
/// The moments of an 8-bit optimizer as bitsandbytes keeps them: <c>state1</c>/<c>state2</c> as uint8 codes of the
/// parameter's shape with a float32 <c>absmax1</c>/<c>absmax2</c> per block (<see cref="BlockwiseQuantization"/>), or, for
/// a parameter of fewer than min_8bit_size values (where the absmax would cost more than it saves), plain float32.
/// The first moment uses the signed code, a second moment (never negative) the unsigned one.
/// </summary>
internal static class EightBitState
{
    public static IEnumerable<StateSpec> Layout(Tensor param, long minEightBitSize, int states)
    {
        var quantised = param.NumEl >= minEightBitSize;
        for (var k = 1; k <= states; k++)
        {
            yield return new($"state{k}", param.Shape, quantised ? DType.UInt8 : DType.Float32);
            if (quantised) yield return new($"absmax{k}", [BlockwiseQuantization.Blocks(param.NumEl)], DType.Float32);
        }
    }

    /// <summary>
    /// Creates the state of each parameter of <paramref name="batch"/> still without one, steps each parameter with 8-bit
    /// moments by itself (in a dispose scope of its own, so that only one parameter's dequantised moments exist at a
    /// time) and returns the others, whose float32 moments step together in list operators.
    /// </summary>
    public static List<ParamSlot> StepEachQuantised(IReadOnlyList<ParamSlot> batch, Func<Tensor, IEnumerable<StateSpec>> layout, Action<ParamSlot> step)
    {
        var plain = new List<ParamSlot>();
        foreach (var slot in batch)
        {
            slot.State.EnsureZeros(layout(slot.Param), slot.Param.Device);
            if (!IsQuantised(slot.State))
            {
                plain.Add(slot);
                continue;
            }
            using var scope = torch.NewDisposeScope();
            step(slot);
        }
        return plain;
    }

    /// <summary>Whether the moments are 8-bit codes (else float32 tensors, a parameter below min_8bit_size).</summary>
    public static bool IsQuantised(ParamState state) => state.Tensors.ContainsKey("absmax1");

    /// <summary>Moment <paramref name="k"/> as float32: the state tensor itself when it is not quantised, else a dequantised copy.</summary>
    public static Tensor Read(ParamState state, int k, bool signed) =>
        state.Tensors.TryGetValue($"absmax{k}", out var absmax) ? BlockwiseQuantization.Dequantize(state[$"state{k}"], absmax, signed) : state[$"state{k}"];

    /// <summary>Stores moment <paramref name="k"/> after an update: quantised again, or (a plain state, updated in place) nothing to do.</summary>
    public static void Write(ParamState state, int k, Tensor value, bool signed)
    {
        if (!state.Tensors.ContainsKey($"absmax{k}")) return;
        var (codes, absmax) = BlockwiseQuantization.Quantize(value, signed);
        state.Set($"state{k}", codes);
        state.Set($"absmax{k}", absmax);
    }

    /// <summary>Whether <see cref="StepOnCpu"/> can take this parameter: float32 and contiguous on CPU, with quantised moments.</summary>
    public static bool FitsTheCpuKernel(Tensor param, Tensor grad, ParamState state) =>
        param.Device.Type == DeviceType.Cpu && param.DType == DType.Float32 && grad.DType == DType.Float32 && grad.Device.Type == DeviceType.Cpu
        && param.IsContiguous && grad.IsContiguous && IsQuantised(state);

    /// <summary>
    /// The whole step of one parameter in the shim's fused CPU kernel (the formulas of <see cref="AdamW8bit"/> and
    /// <see cref="Lion8bit"/>): each value read and written once, blocks in parallel.
    /// </summary>
    public static void StepOnCpu(bool adam, Tensor param, Tensor grad, ParamState state, double beta1, double beta2, double eps, double lr,
        double weightDecay, double stepSize = 0, double correction2 = 1)
    {
        var signed = BlockwiseQuantization.Table.For(signed: true, Device.Cpu);
        var unsigned = BlockwiseQuantization.Table.For(signed: false, Device.Cpu);
        Check(sdt_optim_8bit_step_cpu(adam ? 0 : 1, param.Handle, grad.Handle, state["state1"].Handle, state["absmax1"].Handle,
            adam ? state["state2"].Handle : IntPtr.Zero, adam ? state["absmax2"].Handle : IntPtr.Zero,
            signed.Code.Handle, signed.Bounds.Handle, signed.Start.Handle,
            adam ? unsigned.Code.Handle : IntPtr.Zero, adam ? unsigned.Bounds.Handle : IntPtr.Zero, adam ? unsigned.Start.Handle : IntPtr.Zero,
            beta1, beta2, eps, lr, weightDecay, stepSize, correction2));
        GC.KeepAlive(param);
        GC.KeepAlive(grad);
    }
}
