using SdAppliance.Formats;

namespace SdAppliance.Torch;

/// <summary>Element types, numbered as libtorch's <c>c10::ScalarType</c>.</summary>
public enum DType
{
    UInt8 = 0,
    Int8 = 1,
    Int16 = 2,
    Int32 = 3,
    Int64 = 4,
    Float16 = 5,
    Float32 = 6,
    Float64 = 7,
    Bool = 11,
    BFloat16 = 15,
    Float8E5M2 = 23,
    Float8E4M3FN = 24,
}

public static class DTypeExtensions
{
    public static int ElementSize(this DType dtype) => dtype switch
    {
        DType.UInt8 or DType.Int8 or DType.Bool or DType.Float8E5M2 or DType.Float8E4M3FN => 1,
        DType.Int16 or DType.Float16 or DType.BFloat16 => 2,
        DType.Int32 or DType.Float32 => 4,
        DType.Int64 or DType.Float64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
    };

    public static bool IsFloatingPoint(this DType dtype) =>
        dtype is DType.Float16 or DType.Float32 or DType.Float64 or DType.BFloat16 or DType.Float8E5M2 or DType.Float8E4M3FN;

    /// <summary>The PyTorch spelling: float32, bfloat16, int64...</summary>
    public static string TorchName(this DType dtype) => dtype switch
    {
        DType.UInt8 => "uint8",
        DType.Int8 => "int8",
        DType.Int16 => "int16",
        DType.Int32 => "int32",
        DType.Int64 => "int64",
        DType.Float16 => "float16",
        DType.Float32 => "float32",
        DType.Float64 => "float64",
        DType.Bool => "bool",
        DType.BFloat16 => "bfloat16",
        DType.Float8E5M2 => "float8_e5m2",
        DType.Float8E4M3FN => "float8_e4m3fn",
        _ => dtype.ToString(),
    };

    /// <summary>Parses PyTorch names (float32, fp16, bf16, half, float, ...).</summary>
    public static DType Parse(string name) => name.Trim().ToLowerInvariant() switch
    {
        "uint8" or "u8" => DType.UInt8,
        "int8" or "i8" => DType.Int8,
        "int16" or "i16" or "short" => DType.Int16,
        "int32" or "i32" or "int" => DType.Int32,
        "int64" or "i64" or "long" => DType.Int64,
        "float16" or "fp16" or "f16" or "half" => DType.Float16,
        "float32" or "fp32" or "f32" or "float" => DType.Float32,
        "float64" or "fp64" or "f64" or "double" => DType.Float64,
        "bool" => DType.Bool,
        "bfloat16" or "bf16" => DType.BFloat16,
        "float8_e5m2" => DType.Float8E5M2,
        "float8_e4m3fn" => DType.Float8E4M3FN,
        _ => throw new UserInputException("dtype", $"unknown dtype '{name}'", "use float32, float16, bfloat16, float64, int64, int32, uint8 or bool"),
    };
}
