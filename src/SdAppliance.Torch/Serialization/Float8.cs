using SdAppliance.Formats;

namespace SdAppliance.Torch.Serialization;

/// <summary>
/// float8 decoding for libtorch builds without float8 types (before 2.1): the values become
/// float32, which holds every float8 value exactly.
/// </summary>
internal static class Float8
{
    public static Tensor Decode(byte[] bytes, long[] shape, SafetensorsDType dtype)
    {
        var values = new float[bytes.Length];
        var table = dtype == SafetensorsDType.F8E4M3 ? E4M3 : E5M2;
        for (var i = 0; i < values.Length; i++) values[i] = table[bytes[i]];
        return torch.FromArray<float>(values, shape, DType.Float32);
    }

    private static readonly float[] E4M3 = Table(exponentBits: 4, mantissaBits: 3, bias: 7, finiteOnly: true);
    private static readonly float[] E5M2 = Table(exponentBits: 5, mantissaBits: 2, bias: 15, finiteOnly: false);

    // e4m3fn has no infinities and one NaN pattern per sign (all exponent and mantissa bits set);
    // e5m2 follows IEEE: all-ones exponent is inf (mantissa 0) or NaN.
    private static float[] Table(int exponentBits, int mantissaBits, int bias, bool finiteOnly)
    {
        var table = new float[256];
        var maxExponent = (1 << exponentBits) - 1;
        for (var b = 0; b < 256; b++)
        {
            var sign = (b & 0x80) != 0 ? -1f : 1f;
            var exponent = (b >> mantissaBits) & maxExponent;
            var mantissa = b & ((1 << mantissaBits) - 1);
            float value;
            if (finiteOnly && exponent == maxExponent && mantissa == (1 << mantissaBits) - 1) value = float.NaN;
            else if (!finiteOnly && exponent == maxExponent) value = mantissa == 0 ? float.PositiveInfinity : float.NaN;
            else if (exponent == 0) value = mantissa / (float)(1 << mantissaBits) * MathF.Pow(2, 1 - bias);
            else value = (1 + mantissa / (float)(1 << mantissaBits)) * MathF.Pow(2, exponent - bias);
            table[b] = sign * value;
        }
        return table;
    }
}
