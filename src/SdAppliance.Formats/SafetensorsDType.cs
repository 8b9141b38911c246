namespace SdAppliance.Formats;

/// <summary>
/// Element types of the safetensors format. The header spells them as in
/// <see cref="SafetensorsDTypes.ToHeaderName"/> ("F32", "BF16", "F8_E4M3", ...).
/// </summary>
/// <remarks>
/// The declaration order is the reference implementation's (huggingface/safetensors, <c>Dtype</c>
/// in tensor.rs, which this enum is a subset of) and is load-bearing: its writer sorts tensors by
/// this order descending, then by name, so the writer here sorts by the numeric value to produce
/// the same bytes. Do not reorder; insert new members where the reference has them.
/// </remarks>
public enum SafetensorsDType
{
    /// <summary>Boolean, one byte (0 or 1).</summary>
    Bool,
    /// <summary>Unsigned 8-bit integer.</summary>
    U8,
    /// <summary>Signed 8-bit integer.</summary>
    I8,
    /// <summary>8-bit float, 5 exponent and 2 mantissa bits.</summary>
    F8E5M2,
    /// <summary>8-bit float, 4 exponent and 3 mantissa bits (PyTorch's float8_e4m3fn).</summary>
    F8E4M3,
    /// <summary>Signed 16-bit integer.</summary>
    I16,
    /// <summary>Unsigned 16-bit integer.</summary>
    U16,
    /// <summary>IEEE half precision.</summary>
    F16,
    /// <summary>bfloat16.</summary>
    BF16,
    /// <summary>Signed 32-bit integer.</summary>
    I32,
    /// <summary>Unsigned 32-bit integer.</summary>
    U32,
    /// <summary>IEEE single precision.</summary>
    F32,
    /// <summary>IEEE double precision.</summary>
    F64,
    /// <summary>Signed 64-bit integer.</summary>
    I64,
    /// <summary>Unsigned 64-bit integer.</summary>
    U64,
}

/// <summary>Sizes, header names and byte-size arithmetic for <see cref="SafetensorsDType"/>.</summary>
public static class SafetensorsDTypes
{
    /// <summary>Every supported dtype, in declaration order.</summary>
    public static IReadOnlyList<SafetensorsDType> All { get; } = Enum.GetValues<SafetensorsDType>();

    /// <summary>Bytes per element.</summary>
    public static int ElementSize(this SafetensorsDType dtype) => dtype switch
    {
        SafetensorsDType.Bool or SafetensorsDType.U8 or SafetensorsDType.I8
            or SafetensorsDType.F8E5M2 or SafetensorsDType.F8E4M3 => 1,
        SafetensorsDType.I16 or SafetensorsDType.U16 or SafetensorsDType.F16 or SafetensorsDType.BF16 => 2,
        SafetensorsDType.I32 or SafetensorsDType.U32 or SafetensorsDType.F32 => 4,
        SafetensorsDType.F64 or SafetensorsDType.I64 or SafetensorsDType.U64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Not a safetensors dtype."),
    };

    /// <summary>The dtype's spelling in a safetensors header.</summary>
    public static string ToHeaderName(this SafetensorsDType dtype) => dtype switch
    {
        SafetensorsDType.Bool => "BOOL",
        SafetensorsDType.F8E5M2 => "F8_E5M2",
        SafetensorsDType.F8E4M3 => "F8_E4M3",
        _ when Enum.IsDefined(dtype) => dtype.ToString(),
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Not a safetensors dtype."),
    };

    /// <summary>Parses a header dtype name; exact and case-sensitive, as the reference reader is.</summary>
    public static bool TryParseHeaderName(string name, out SafetensorsDType dtype)
    {
        foreach (var candidate in All)
        {
            if (candidate.ToHeaderName() == name)
            {
                dtype = candidate;
                return true;
            }
        }
        dtype = default;
        return false;
    }

    /// <summary>
    /// Number of elements of <paramref name="shape"/> (1 for a scalar, shape []), or false when a
    /// dimension is negative or the product overflows a long.
    /// </summary>
    public static bool TryElementCount(ReadOnlySpan<long> shape, out long count)
    {
        count = 1;
        foreach (var dim in shape)
        {
            if (dim < 0 || (dim != 0 && count > long.MaxValue / dim))
            {
                count = 0;
                return false;
            }
            count *= dim;
        }
        return true;
    }

    /// <summary>Bytes a tensor of this dtype and shape occupies, or false on a negative dimension or overflow.</summary>
    public static bool TryByteLength(this SafetensorsDType dtype, ReadOnlySpan<long> shape, out long bytes)
    {
        bytes = 0;
        if (!TryElementCount(shape, out var count))
            return false;
        var size = dtype.ElementSize();
        if (count > long.MaxValue / size)
            return false;
        bytes = count * size;
        return true;
    }
}
