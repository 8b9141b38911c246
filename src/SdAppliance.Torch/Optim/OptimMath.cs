using SdAppliance.Torch.Native;

namespace SdAppliance.Torch.Optim;

// The out-of-place operations the optimizers need, kept private to this folder so the optimizers
// do not depend on how the public Tensor surface names them.
internal static class OptimMath
{
    public static Tensor Sqrt(Tensor x) => Op.Get("aten::sqrt").Begin().T(x).Call();

    public static Tensor Rsqrt(Tensor x) => Op.Get("aten::rsqrt").Begin().T(x).Call();

    public static Tensor Sign(Tensor x) => Op.Get("aten::sign").Begin().T(x).Call();

    public static Tensor Pow(Tensor x, double exponent) => Op.Get("aten::pow", "Tensor_Scalar").Begin().T(x).D(exponent).Call();

    /// <summary>Mean over one dimension.</summary>
    public static Tensor Mean(Tensor x, long dim, bool keepDim = false) =>
        Op.Get("aten::mean", "dim").Begin().T(x).Ints([dim]).B(keepDim).Call();

    public static Tensor Unsqueeze(Tensor x, long dim) => Op.Get("aten::unsqueeze").Begin().T(x).I(dim).Call();

    /// <summary>The p-norm of all elements as a 0-d tensor (p = ∞ gives the largest magnitude).</summary>
    public static Tensor VectorNorm(Tensor x, double p) => Op.Get("aten::linalg_vector_norm").Begin().T(x).D(p).Call();

    /// <summary>The inner product of two 1-d tensors, as a 0-d tensor.</summary>
    public static Tensor Dot(Tensor a, Tensor b) => Op.Get("aten::dot").Begin().T(a).T(b).Call();

    public static Tensor Stack(IReadOnlyList<Tensor> tensors) => Op.Get("aten::stack").Begin().Tensors(tensors).I(0).Call();

    /// <summary>
    /// The bucket of each value among sorted <paramref name="boundaries"/>: i with boundaries[i-1] &lt; x ≤ boundaries[i], or with
    /// <paramref name="right"/> boundaries[i-1] ≤ x &lt; boundaries[i] (torch.bucketize), as int64.
    /// </summary>
    public static Tensor Bucketize(Tensor x, Tensor boundaries, bool right) =>
        Op.Get("aten::bucketize", "Tensor").Begin().T(x).T(boundaries).B(false).B(right).Call();

    /// <summary>Pads the last dimensions with zeros: (before, after) pairs from the last dimension inwards.</summary>
    public static Tensor ConstantPad(Tensor x, long[] padding) => Op.Get("aten::constant_pad_nd").Begin().T(x).Ints(padding).D(0).Call();
}
