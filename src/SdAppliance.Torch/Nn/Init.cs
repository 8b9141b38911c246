using SdAppliance.Torch.Native;

namespace SdAppliance.Torch.Nn;

/// <summary>
/// <c>torch.nn.init</c>: in-place initialisers drawing from the same generators with the same
/// formulas as PyTorch, so a seeded model starts from PyTorch's exact numbers on CPU.
/// </summary>
public static class Init
{
    [ThreadStatic] private static int skipDepth;

    /// <summary>
    /// Until the returned scope is disposed, the initialisers on this thread leave tensors as
    /// allocated (uninitialised <c>torch.Empty</c> memory) and draw nothing, as PyTorch's
    /// <c>skip_init</c>: for a model whose weights are about to be loaded, or built only for its
    /// names and shapes, where filling gigabytes would be wasted (and would touch every page).
    /// </summary>
    public static SkipInitScope Skip() => new();

    /// <summary>Whether a <see cref="Skip"/> scope is open on this thread.</summary>
    public static bool IsSkipping => skipDepth > 0;

    public sealed class SkipInitScope : IDisposable
    {
        private bool disposed;

        internal SkipInitScope() => skipDepth++;

        public void Dispose()
        {
            if (disposed) return;
            disposed = true;
            skipDepth--;
        }
    }

    /// <summary>Fills with U(from, to), as <c>uniform_</c>.</summary>
    public static Tensor Uniform_(Tensor tensor, double from = 0, double to = 1, Generator? generator = null)
    {
        if (IsSkipping) return tensor;
        using var noGrad = Autograd.NoGrad();
        return Op.Get("aten::uniform_").Begin().T(tensor).D(from).D(to).Gen(generator).CallInPlace(tensor);
    }

    /// <summary>Fills with N(mean, std²), as <c>normal_</c>.</summary>
    public static Tensor Normal_(Tensor tensor, double mean = 0, double std = 1, Generator? generator = null)
    {
        if (IsSkipping) return tensor;
        using var noGrad = Autograd.NoGrad();
        return Op.Get("aten::normal_").Begin().T(tensor).D(mean).D(std).Gen(generator).CallInPlace(tensor);
    }

    public static Tensor Zeros_(Tensor tensor)
    {
        if (IsSkipping) return tensor;
        using var noGrad = Autograd.NoGrad();
        return tensor.Zero_();
    }

    public static Tensor Ones_(Tensor tensor)
    {
        if (IsSkipping) return tensor;
        using var noGrad = Autograd.NoGrad();
        return tensor.Fill_(1);
    }

    /// <summary>fan_in = size(1) × receptive field, fan_out = size(0) × receptive field, as <c>_calculate_fan_in_and_fan_out</c>.</summary>
    public static (long FanIn, long FanOut) CalculateFanInAndFanOut(Tensor tensor)
    {
        var shape = tensor.Shape;
        if (shape.Length < 2)
            throw new ArgumentException("fan in and fan out cannot be computed for a tensor with fewer than 2 dimensions", nameof(tensor));
        long receptiveField = 1;
        for (var i = 2; i < shape.Length; i++) receptiveField *= shape[i];
        return (shape[1] * receptiveField, shape[0] * receptiveField);
    }

    /// <summary>
    /// He uniform with fan_in and a leaky-ReLU gain, as <c>kaiming_uniform_(tensor, a)</c>.
    /// Linear and Conv2d use a = √5, which makes the bound 1/√fan_in.
    /// </summary>
    public static Tensor KaimingUniform_(Tensor tensor, double a = 0, Generator? generator = null)
    {
        var (fanIn, _) = CalculateFanInAndFanOut(tensor);
        // Computed in the same steps as PyTorch so the bound rounds the same way.
        var gain = Math.Sqrt(2.0 / (1 + a * a));
        var std = gain / Math.Sqrt(fanIn);
        var bound = Math.Sqrt(3.0) * std;
        return Uniform_(tensor, -bound, bound, generator);
    }

    /// <summary>
    /// Linear's and Conv2d's reset_parameters: a weight of <paramref name="weightShape"/> from
    /// kaiming_uniform(a = √5), then, with <paramref name="bias"/>, a bias as long as the weight's first
    /// dimension from U(-1/√fan_in, 1/√fan_in) with the weight's fan_in; weight first, then bias, from
    /// the same generator.
    /// </summary>
    internal static (Tensor Weight, Tensor? Bias) LayerParameters(long[] weightShape, bool bias, Device? device, DType dtype, Generator? generator)
    {
        var weight = torch.Empty(weightShape, dtype, device);
        KaimingUniform_(weight, Math.Sqrt(5), generator);
        if (!bias) return (weight, null);
        var b = torch.Empty([weightShape[0]], dtype, device);
        var (fanIn, _) = CalculateFanInAndFanOut(weight);
        var bound = fanIn > 0 ? 1 / Math.Sqrt(fanIn) : 0;
        Uniform_(b, -bound, bound, generator);
        return (weight, b);
    }
}
