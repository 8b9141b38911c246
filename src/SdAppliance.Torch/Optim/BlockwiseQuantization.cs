using System.Collections.Concurrent;

namespace SdAppliance.Torch.Optim;

/// <summary>
/// Block-wise dynamic quantisation, the scheme of bitsandbytes' 8-bit optimizers (Dettmers et al. 2022, "8-bit
/// Optimizers via Block-wise Quantization"): a tensor is cut into blocks of <see cref="BlockSize"/> values, each block
/// is divided by its largest magnitude (kept as a float32 "absmax"), and every normalised value is stored as the index
/// of the nearest of 256 values of the dynamic code (<see cref="DynamicCode"/>), one byte per value.
/// </summary>
public static class BlockwiseQuantization
{
    /// <summary>Values per block: bitsandbytes' block size for optimizer states.</summary>
    public const int BlockSize = 2048;

    private const float SmallestNormal = 1.17549435e-38f;

    /// <summary>Blocks (absmax values) of a tensor of <paramref name="elements"/> values.</summary>
    public static long Blocks(long elements) => (elements + BlockSize - 1) / BlockSize;

    /// <summary>
    /// bitsandbytes' dynamic (tree) code with 7 exponent bits: per decade 10^-6 … 10^0 a linear run of fractions between
    /// 0.1 and 1 (the midpoints of a linspace), twice as many per decade as the one below, plus 0 and 1; the signed code
    /// holds each fraction with both signs. Sorted, 256 values in [-1, 1] (signed) or [0, 1] (unsigned). Computed in
    /// float32 as torch.linspace computes it, so that it is the same table.
    /// </summary>
    public static float[] DynamicCode(bool signed)
    {
        const int exponentBits = 7;
        var data = new List<float>(256);
        for (var i = 0; i < exponentBits; i++)
        {
            // Fractions per decade: 2^i signed (each with two signs), 2^(i+1) unsigned; 254 in all either way.
            var fractions = signed ? 1 << i : 2 << i;
            var boundaries = Linspace(0.1f, 1f, fractions + 1);
            var scale = (float)Math.Pow(10, -(exponentBits - 1) + i);
            for (var k = 0; k < fractions; k++)
            {
                var mean = (boundaries[k] + boundaries[k + 1]) / 2f;
                data.Add(scale * mean);
                if (signed) data.Add(-scale * mean);
            }
        }
        data.Add(0f);
        data.Add(1f);
        data.Sort();
        return [.. data];
    }

    // torch.linspace's float32 values: start + i·step for the first half, end − (n−1−i)·step for the rest.
    private static float[] Linspace(float start, float end, int steps)
    {
        var values = new float[steps];
        var step = (end - start) / (steps - 1);
        var half = steps / 2;
        for (var i = 0; i < steps; i++)
            values[i] = i < half ? start + step * i : end - step * (steps - 1 - i);
        return values;
    }

    /// <summary>
    /// The nearest code index of each value of <paramref name="values"/> (any float shape) and each block's absmax: a uint8
    /// tensor of the same shape and a float32 tensor of <see cref="Blocks"/> values. In the signed code a negative value
    /// never becomes 0 (as bitsandbytes keeps a first moment's sign): it takes the smallest negative code instead.
    /// </summary>
    public static (Tensor Codes, Tensor Absmax) Quantize(Tensor values, bool signed)
    {
        using var scope = torch.NewDisposeScope();
        var n = values.NumEl;
        var blocks = InBlocks(values.Float().Reshape(-1));
        var absmax = blocks.Abs().Amax(1);
        // A block of zeros has absmax 0; dividing by the smallest normal float keeps its values 0 instead of 0/0.
        var normalised = blocks.Div(absmax.ClampMin(SmallestNormal).Unsqueeze(1));
        var table = Table.For(signed, values.Device);
        var indices = OptimMath.Bucketize(normalised, table.Bounds, right: true).To(DType.UInt8).Reshape(-1);
        var codes = (indices.NumEl == n ? indices : indices.Narrow(0, 0, n)).Reshape(values.Shape);
        return (scope.MoveToOuterScope(codes), scope.MoveToOuterScope(absmax));
    }

    /// <summary>The float32 values that <paramref name="codes"/> and <paramref name="absmax"/> stand for (the inverse of <see cref="Quantize"/>).</summary>
    public static Tensor Dequantize(Tensor codes, Tensor absmax, bool signed)
    {
        using var scope = torch.NewDisposeScope();
        var n = codes.NumEl;
        var table = Table.For(signed, codes.Device);
        var values = InBlocks(table.Code.IndexSelect(0, codes.Reshape(-1).To(DType.Int32))).Mul(absmax.Unsqueeze(1)).Reshape(-1);
        return scope.MoveToOuterScope((values.NumEl == n ? values : values.Narrow(0, 0, n)).Reshape(codes.Shape));
    }

    // A flat tensor as [blocks, BlockSize], the last block padded with zeros (which change no absmax).
    private static Tensor InBlocks(Tensor flat)
    {
        var blocks = Blocks(flat.NumEl);
        var padding = blocks * BlockSize - flat.NumEl;
        return (padding == 0 ? flat : OptimMath.ConstantPad(flat, [0, padding])).View(blocks, BlockSize);
    }

    /// <summary>
    /// A code on a device, with the boundaries between neighbouring values that nearest-value rounding uses, and for the
    /// CPU kernel the bucket of the lowest float of each value of a float's top 16 bits (where its scan starts).
    /// </summary>
    internal sealed record Table(Tensor Code, Tensor Bounds, Tensor Start)
    {
        private static readonly ConcurrentDictionary<(bool Signed, Device Device), Table> Tables = new();

        // Process-wide, never freed: 66 KiB per code and device.
        public static Table For(bool signed, Device device) => Tables.GetOrAdd((signed, device), key => Create(key.Signed, key.Device));

        private static Table Create(bool signed, Device device)
        {
            var code = DynamicCode(signed);
            var bounds = new float[code.Length - 1];
            for (var i = 0; i < bounds.Length; i++) bounds[i] = (code[i] + code[i + 1]) / 2f;
            // With right-closed buckets a boundary of exactly 0 sends negative values to the smallest negative code
            // and 0 itself to 0: the sign of a first moment survives quantisation.
            if (signed) bounds[Array.IndexOf(code, 0f) - 1] = 0f;
            var start = new byte[1 << 16];
            for (var key = 0; key < start.Length; key++)
            {
                // Positive floats grow with their bits, negative ones shrink: the range's lowest float is one of its ends.
                var low = Math.Min(BitConverter.Int32BitsToSingle(key << 16), BitConverter.Int32BitsToSingle((key << 16) | 0xFFFF));
                start[key] = float.IsNaN(low) ? (byte)0 : (byte)CountAtMost(bounds, low);
            }
            using var scope = torch.NewDisposeScope();
            return new Table(torch.Tensor(code).To(device).DetachFromDisposeScope(), torch.Tensor(bounds).To(device).DetachFromDisposeScope(),
                torch.Tensor(start).To(device).DetachFromDisposeScope());
        }

        private static int CountAtMost(float[] sorted, float x)
        {
            var (lo, hi) = (0, sorted.Length);
            while (lo < hi)
            {
                var mid = (lo + hi) / 2;
                if (sorted[mid] <= x) lo = mid + 1;
                else hi = mid;
            }
            return lo;
        }
    }
}
