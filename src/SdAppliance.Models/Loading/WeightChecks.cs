using SdAppliance.Formats;
using SdAppliance.Torch;

namespace SdAppliance.Models.Loading;

/// <summary>
/// A weights file (model, LoRA, embedding) holds a tensor that cannot be used: NaN or infinite values, or a
/// value that should be a single number and is not. <see cref="UserInputException.Subject"/> is the file.
/// </summary>
public sealed class WeightsException(string file, string tensor, string problem, string? fix = null)
    : UserInputException(file, $"{tensor} {problem}", fix)
{
    /// <summary>The tensor at fault, as the file names it.</summary>
    public string Tensor { get; } = tensor;
}

/// <summary>
/// The checks every weights file passes when it is loaded. NaN or infinite weights (a file saved from a
/// diverged training run, or damaged) do not fail anywhere later: the image comes out black and the program
/// exits 0. One isfinite pass per tensor finds them at load time (a full SD 1.5 model is about a second on CPU).
/// </summary>
public static class WeightChecks
{
    /// <summary>Throws <see cref="WeightsException"/> when the floating-point <paramref name="tensor"/> holds a NaN or an infinity.</summary>
    public static void RequireFinite(string file, string name, Tensor tensor)
    {
        if (!tensor.DType.IsFloatingPoint()) return;
        using var finite = tensor.IsFinite();
        using var all = finite.All();
        if (all.Item() != 0) return;
        using var count = finite.Sum();
        var bad = tensor.NumEl - (long)count.Item();
        throw new WeightsException(file, name, $"holds {bad:N0} NaN or infinite values (of {tensor.NumEl:N0}); the file is damaged or was saved from a training run that diverged",
            "use another copy of the file, or an earlier checkpoint of the training run");
    }

    /// <summary>The value of a tensor that must be one finite number (a LoRA module's alpha).</summary>
    public static double Scalar(string file, string name, Tensor tensor)
    {
        if (tensor.NumEl != 1)
            throw new WeightsException(file, name, $"is [{string.Join(", ", tensor.Shape)}], not a single number");
        var value = tensor.Item();
        return double.IsFinite(value) ? value
            : throw new WeightsException(file, name, $"is {value.ToString(System.Globalization.CultureInfo.InvariantCulture)}, not a finite number");
    }
}
