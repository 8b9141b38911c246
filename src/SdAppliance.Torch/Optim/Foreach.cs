using SdAppliance.Torch.Native;

namespace SdAppliance.Torch.Optim;

/// <summary>
/// libtorch's <c>_foreach_*</c> operators: one dispatcher call for a whole list of tensors instead of one
/// per tensor. On CPU libtorch runs each as a loop over the single-tensor operator, so the results are the
/// same bits as the per-tensor calls; what they save is the call overhead from .NET for a LoRA's hundreds
/// of small tensors (the optimizer keeps each list small enough to stay in cache, see Optimizer.Step).
/// </summary>
internal static class Foreach
{
    private static readonly Op MulScalarInPlaceOp = Op.Get("aten::_foreach_mul_", "Scalar");
    private static readonly Op MulScalarOp = Op.Get("aten::_foreach_mul", "Scalar");
    private static readonly Op AddListInPlaceOp = Op.Get("aten::_foreach_add_", "List");
    private static readonly Op AddListOp = Op.Get("aten::_foreach_add", "List");
    private static readonly Op AddScalarInPlaceOp = Op.Get("aten::_foreach_add_", "Scalar");
    private static readonly Op DivScalarInPlaceOp = Op.Get("aten::_foreach_div_", "Scalar");
    private static readonly Op AddcmulInPlaceOp = Op.Get("aten::_foreach_addcmul_", "Scalar");
    private static readonly Op AddcdivInPlaceOp = Op.Get("aten::_foreach_addcdiv_", "Scalar");
    private static readonly Op SqrtOp = Op.Get("aten::_foreach_sqrt");
    private static readonly Op NegOp = Op.Get("aten::_foreach_neg");
    private static readonly Op MaximumListInPlaceOp = Op.Get("aten::_foreach_maximum_", "List");

    /// <summary>self[i] *= scalar.</summary>
    public static void Mul_(IReadOnlyList<Tensor> self, double scalar) => MulScalarInPlaceOp.Begin().Tensors(self).D(scalar).CallMany();

    /// <summary>self[i] · scalar, new tensors.</summary>
    public static Tensor[] Mul(IReadOnlyList<Tensor> self, double scalar) => MulScalarOp.Begin().Tensors(self).D(scalar).CallMany();

    /// <summary>self[i] += alpha · other[i].</summary>
    public static void Add_(IReadOnlyList<Tensor> self, IReadOnlyList<Tensor> other, double alpha = 1) =>
        AddListInPlaceOp.Begin().Tensors(self).Tensors(other).D(alpha).CallMany();

    /// <summary>self[i] + alpha · other[i], new tensors.</summary>
    public static Tensor[] Add(IReadOnlyList<Tensor> self, IReadOnlyList<Tensor> other, double alpha = 1) =>
        AddListOp.Begin().Tensors(self).Tensors(other).D(alpha).CallMany();

    /// <summary>self[i] += scalar.</summary>
    public static void Add_(IReadOnlyList<Tensor> self, double scalar) => AddScalarInPlaceOp.Begin().Tensors(self).D(scalar).CallMany();

    /// <summary>self[i] /= scalar.</summary>
    public static void Div_(IReadOnlyList<Tensor> self, double scalar) => DivScalarInPlaceOp.Begin().Tensors(self).D(scalar).CallMany();

    /// <summary>self[i] += value · t1[i] · t2[i].</summary>
    public static void Addcmul_(IReadOnlyList<Tensor> self, IReadOnlyList<Tensor> t1, IReadOnlyList<Tensor> t2, double value) =>
        AddcmulInPlaceOp.Begin().Tensors(self).Tensors(t1).Tensors(t2).D(value).CallMany();

    /// <summary>self[i] += value · t1[i] / t2[i].</summary>
    public static void Addcdiv_(IReadOnlyList<Tensor> self, IReadOnlyList<Tensor> t1, IReadOnlyList<Tensor> t2, double value) =>
        AddcdivInPlaceOp.Begin().Tensors(self).Tensors(t1).Tensors(t2).D(value).CallMany();

    public static Tensor[] Sqrt(IReadOnlyList<Tensor> self) => SqrtOp.Begin().Tensors(self).CallMany();

    public static Tensor[] Neg(IReadOnlyList<Tensor> self) => NegOp.Begin().Tensors(self).CallMany();

    /// <summary>self[i] = max(self[i], other[i]), elementwise.</summary>
    public static void Maximum_(IReadOnlyList<Tensor> self, IReadOnlyList<Tensor> other) => MaximumListInPlaceOp.Begin().Tensors(self).Tensors(other).CallMany();

    /// <summary>
    /// this[i] = lerp(this[i], end[i], weight), one call per tensor: libtorch 1.13 has no list lerp, and a list
    /// subtraction and add (the same bits below weight 0.5) make two passes over memory and a temporary where lerp
    /// makes one, which measured slower than the calls they save.
    /// </summary>
    public static void Lerp_(IReadOnlyList<Tensor> self, IReadOnlyList<Tensor> end, double weight)
    {
        for (var i = 0; i < self.Count; i++) self[i].Lerp_(end[i], weight);
    }
}
