using SdAppliance.Formats;

namespace SdAppliance.Torch;

/// <summary>Device kinds, numbered as libtorch's <c>c10::DeviceType</c>.</summary>
public enum DeviceType
{
    Cpu = 0,
    Cuda = 1,
    /// <summary>Shapes and dtypes without storage: builds a model's structure at no memory cost.</summary>
    Meta = 14,
}

/// <summary>Where a tensor lives: <c>cpu</c> or <c>cuda:N</c>.</summary>
public readonly record struct Device(DeviceType Type, int Index = -1)
{
    public static readonly Device Cpu = new(DeviceType.Cpu);

    public static readonly Device Meta = new(DeviceType.Meta);

    public static Device Cuda(int index = 0) => new(DeviceType.Cuda, index);

    public bool IsCuda => Type == DeviceType.Cuda;

    /// <summary>Parses <c>cpu</c>, <c>cuda</c>, <c>cuda:1</c>.</summary>
    public static Device Parse(string text)
    {
        var t = text.Trim().ToLowerInvariant();
        if (t == "cpu") return Cpu;
        if (t == "cuda") return Cuda(0);
        if (t == "meta") return Meta;
        if (t.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(t.AsSpan(5), out var index) && index >= 0)
            return Cuda(index);
        throw new UserInputException("device", $"unknown device '{text}'", "use cpu, cuda or cuda:N");
    }

    public override string ToString() => Type switch
    {
        DeviceType.Cpu => "cpu",
        DeviceType.Cuda => $"cuda:{Math.Max(Index, 0)}",
        DeviceType.Meta => "meta",
        _ => $"{Type}:{Index}",
    };
}
