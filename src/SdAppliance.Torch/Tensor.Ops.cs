using SdAppliance.Torch.Native;

namespace SdAppliance.Torch;

// The tensor methods Stable Diffusion training and inference call, named as in PyTorch. Each
// goes through libtorch's dispatcher, so autograd, autocast and devices behave as in PyTorch.
// Overloads avoid an optional DType next to an optional dim: `x.Sum(0)` must mean dim 0.
public sealed partial class Tensor
{
    // ---- matrix products ----
    public Tensor Matmul(Tensor other) => Op.Get("aten::matmul").Begin().T(this).T(other).Call();
    public Tensor Mm(Tensor mat2) => Op.Get("aten::mm").Begin().T(this).T(mat2).Call();
    public Tensor Bmm(Tensor mat2) => Op.Get("aten::bmm").Begin().T(this).T(mat2).Call();

    /// <summary>The Kronecker product (torch.kron): block (i, j) of the result is this[i, j] · other.</summary>
    public Tensor Kron(Tensor other) => Op.Get("aten::kron").Begin().T(this).T(other).Call();

    /// <summary>beta·this + alpha·(batch1 @ batch2), batched.</summary>
    public Tensor Baddbmm(Tensor batch1, Tensor batch2, double beta = 1, double alpha = 1) =>
        Op.Get("aten::baddbmm").Begin().T(this).T(batch1).T(batch2).D(beta).D(alpha).Call();

    /// <summary>beta·this + alpha·(mat1 @ mat2) for matrices, as torch.addmm: one GEMM that accumulates into a copy of this.</summary>
    public Tensor Addmm(Tensor mat1, Tensor mat2, double beta = 1, double alpha = 1) =>
        Op.Get("aten::addmm").Begin().T(this).T(mat1).T(mat2).D(beta).D(alpha).Call();

    // ---- activations ----
    public Tensor Sigmoid() => Op.Get("aten::sigmoid").Begin().T(this).Call();
    public Tensor Tanh() => Op.Get("aten::tanh").Begin().T(this).Call();
    public Tensor Relu() => Op.Get("aten::relu").Begin().T(this).Call();

    /// <summary>Softmax along <paramref name="dim"/>, computed in <paramref name="dtype"/> when given (the input is cast first).</summary>
    public Tensor Softmax(long dim, DType? dtype = null) => Op.Get("aten::softmax", "int").Begin().T(this).I(dim).DT(dtype).Call();

    public Tensor LogSoftmax(long dim, DType? dtype = null) => Op.Get("aten::log_softmax", "int").Begin().T(this).I(dim).DT(dtype).Call();

    // ---- elementwise math ----
    public Tensor Abs() => Op.Get("aten::abs").Begin().T(this).Call();
    public Tensor Exp() => Op.Get("aten::exp").Begin().T(this).Call();
    public Tensor Log() => Op.Get("aten::log").Begin().T(this).Call();
    public Tensor Sqrt() => Op.Get("aten::sqrt").Begin().T(this).Call();
    public Tensor Rsqrt() => Op.Get("aten::rsqrt").Begin().T(this).Call();
    public Tensor Sin() => Op.Get("aten::sin").Begin().T(this).Call();
    public Tensor Cos() => Op.Get("aten::cos").Begin().T(this).Call();
    public Tensor Sign() => Op.Get("aten::sign").Begin().T(this).Call();
    public Tensor Square() => Op.Get("aten::square").Begin().T(this).Call();
    public Tensor Reciprocal() => Op.Get("aten::reciprocal").Begin().T(this).Call();
    public Tensor Floor() => Op.Get("aten::floor").Begin().T(this).Call();

    /// <summary>Rounds half to even, as torch.round.</summary>
    public Tensor Round() => Op.Get("aten::round").Begin().T(this).Call();

    public Tensor Round(long decimals) => Op.Get("aten::round", "decimals").Begin().T(this).I(decimals).Call();

    public Tensor Pow(double exponent) => Op.Get("aten::pow", "Tensor_Scalar").Begin().T(this).D(exponent).Call();
    public Tensor Pow(Tensor exponent) => Op.Get("aten::pow", "Tensor_Tensor").Begin().T(this).T(exponent).Call();

    /// <summary>Limits values to [min, max]; a bound left null is not applied.</summary>
    public Tensor Clamp(double? min = null, double? max = null) => Op.Get("aten::clamp").Begin().T(this).D(min).D(max).Call();

    public Tensor Clamp(Tensor? min, Tensor? max) => Op.Get("aten::clamp", "Tensor").Begin().T(this).T(min).T(max).Call();
    public Tensor ClampMin(double min) => Clamp(min, null);
    public Tensor ClampMax(double max) => Clamp(null, max);

    /// <summary>this + weight·(end − this).</summary>
    public Tensor Lerp(Tensor end, double weight) => Op.Get("aten::lerp", "Scalar").Begin().T(this).T(end).D(weight).Call();

    public Tensor Lerp(Tensor end, Tensor weight) => Op.Get("aten::lerp", "Tensor").Begin().T(this).T(end).T(weight).Call();

    /// <summary>Elementwise maximum of two tensors (torch.maximum).</summary>
    public Tensor Maximum(Tensor other) => Op.Get("aten::maximum").Begin().T(this).T(other).Call();

    public Tensor Minimum(Tensor other) => Op.Get("aten::minimum").Begin().T(this).T(other).Call();

    // ---- comparisons and logic (bool results) ----
    public Tensor Eq(Tensor other) => Op.Get("aten::eq", "Tensor").Begin().T(this).T(other).Call();
    public Tensor Eq(double other) => Op.Get("aten::eq", "Scalar").Begin().T(this).D(other).Call();
    public Tensor Ne(Tensor other) => Op.Get("aten::ne", "Tensor").Begin().T(this).T(other).Call();
    public Tensor Ne(double other) => Op.Get("aten::ne", "Scalar").Begin().T(this).D(other).Call();
    public Tensor Gt(Tensor other) => Op.Get("aten::gt", "Tensor").Begin().T(this).T(other).Call();
    public Tensor Gt(double other) => Op.Get("aten::gt", "Scalar").Begin().T(this).D(other).Call();
    public Tensor Lt(Tensor other) => Op.Get("aten::lt", "Tensor").Begin().T(this).T(other).Call();
    public Tensor Lt(double other) => Op.Get("aten::lt", "Scalar").Begin().T(this).D(other).Call();
    public Tensor Ge(Tensor other) => Op.Get("aten::ge", "Tensor").Begin().T(this).T(other).Call();
    public Tensor Ge(double other) => Op.Get("aten::ge", "Scalar").Begin().T(this).D(other).Call();
    public Tensor Le(Tensor other) => Op.Get("aten::le", "Tensor").Begin().T(this).T(other).Call();
    public Tensor Le(double other) => Op.Get("aten::le", "Scalar").Begin().T(this).D(other).Call();
    public Tensor LogicalNot() => Op.Get("aten::logical_not").Begin().T(this).Call();
    public Tensor LogicalAnd(Tensor other) => Op.Get("aten::logical_and").Begin().T(this).T(other).Call();
    public Tensor LogicalOr(Tensor other) => Op.Get("aten::logical_or").Begin().T(this).T(other).Call();
    public Tensor IsFinite() => Op.Get("aten::isfinite").Begin().T(this).Call();
    public Tensor IsNan() => Op.Get("aten::isnan").Begin().T(this).Call();

    /// <summary>|this − other| ≤ atol + rtol·|other| everywhere (broadcasting), as torch.allclose.</summary>
    public bool Allclose(Tensor other, double rtol = 1e-5, double atol = 1e-8, bool equalNan = false) =>
        Op.Get("aten::allclose").Begin().T(this).T(other).D(rtol).D(atol).B(equalNan).CallScalar() != 0;

    /// <summary>A copy with <paramref name="value"/> where <paramref name="mask"/> (bool, broadcast) is true.</summary>
    public Tensor MaskedFill(Tensor mask, double value) => Op.Get("aten::masked_fill", "Scalar").Begin().T(this).T(mask).D(value).Call();

    /// <summary>As <see cref="MaskedFill(Tensor, double)"/> with a zero-dimensional value tensor (differentiable in it).</summary>
    public Tensor MaskedFill(Tensor mask, Tensor value) => Op.Get("aten::masked_fill", "Tensor").Begin().T(this).T(mask).T(value).Call();

    // ---- reductions ----
    /// <summary>Sum over <paramref name="dims"/> (all dims when null).</summary>
    public Tensor Sum(long[]? dims = null, bool keepdim = false, DType? dtype = null) =>
        dims is null && !keepdim
            ? Op.Get("aten::sum").Begin().T(this).DT(dtype).Call()
            : Op.Get("aten::sum", "dim_IntList").Begin().T(this).IntsOrNone(dims).B(keepdim).DT(dtype).Call();

    public Tensor Sum(long dim, bool keepdim = false, DType? dtype = null) => Sum([dim], keepdim, dtype);

    public Tensor Mean(long[]? dims = null, bool keepdim = false, DType? dtype = null) =>
        dims is null && !keepdim
            ? Op.Get("aten::mean").Begin().T(this).DT(dtype).Call()
            : Op.Get("aten::mean", "dim").Begin().T(this).IntsOrNone(dims).B(keepdim).DT(dtype).Call();

    public Tensor Mean(long dim, bool keepdim = false, DType? dtype = null) => Mean([dim], keepdim, dtype);

    /// <summary>
    /// Variance over <paramref name="dims"/> (all when null) with divisor N − <paramref name="correction"/>:
    /// 1 is the unbiased estimate (PyTorch's default), 0 the population variance.
    /// </summary>
    public Tensor Var(long[]? dims = null, long correction = 1, bool keepdim = false) =>
        Op.Get("aten::var", "correction").Begin().T(this).IntsOrNone(dims).I(correction).B(keepdim).Call();

    public Tensor Var(long dim, long correction = 1, bool keepdim = false) => Var([dim], correction, keepdim);
    public Tensor Var(long[]? dims, bool unbiased, bool keepdim = false) => Var(dims, unbiased ? 1 : 0, keepdim);

    public Tensor Std(long[]? dims = null, long correction = 1, bool keepdim = false) =>
        Op.Get("aten::std", "correction").Begin().T(this).IntsOrNone(dims).I(correction).B(keepdim).Call();

    public Tensor Std(long dim, long correction = 1, bool keepdim = false) => Std([dim], correction, keepdim);
    public Tensor Std(long[]? dims, bool unbiased, bool keepdim = false) => Std(dims, unbiased ? 1 : 0, keepdim);

    /// <summary>The largest element (a zero-dimensional tensor).</summary>
    public Tensor Max() => Op.Get("aten::max").Begin().T(this).Call();

    /// <summary>Largest values along <paramref name="dim"/> and their indices (the first one on ties).</summary>
    public (Tensor Values, Tensor Indices) Max(long dim, bool keepdim = false) =>
        ValuesAndIndices(Op.Get("aten::max", "dim").Begin().T(this).I(dim).B(keepdim).CallMany());

    /// <summary>Elementwise maximum, as torch.max(a, b).</summary>
    public Tensor Max(Tensor other) => Maximum(other);

    public Tensor Min() => Op.Get("aten::min").Begin().T(this).Call();

    public (Tensor Values, Tensor Indices) Min(long dim, bool keepdim = false) =>
        ValuesAndIndices(Op.Get("aten::min", "dim").Begin().T(this).I(dim).B(keepdim).CallMany());

    public Tensor Min(Tensor other) => Minimum(other);

    /// <summary>Index of the largest element (of the flattened tensor when <paramref name="dim"/> is null).</summary>
    public Tensor Argmax(long? dim = null, bool keepdim = false) => Op.Get("aten::argmax").Begin().T(this).I(dim).B(keepdim).Call();

    public Tensor Argmin(long? dim = null, bool keepdim = false) => Op.Get("aten::argmin").Begin().T(this).I(dim).B(keepdim).Call();

    /// <summary>Maximum over <paramref name="dims"/> (all when null); unlike Max, its gradient is spread evenly over ties.</summary>
    public Tensor Amax(long[]? dims = null, bool keepdim = false) => Op.Get("aten::amax").Begin().T(this).Ints(dims ?? []).B(keepdim).Call();

    public Tensor Amax(long dim, bool keepdim = false) => Amax([dim], keepdim);
    public Tensor Amin(long[]? dims = null, bool keepdim = false) => Op.Get("aten::amin").Begin().T(this).Ints(dims ?? []).B(keepdim).Call();
    public Tensor Amin(long dim, bool keepdim = false) => Amin([dim], keepdim);

    /// <summary>The vector p-norm over <paramref name="dims"/> (all elements when null), as torch.linalg.vector_norm.</summary>
    public Tensor Norm(double p = 2, long[]? dims = null, bool keepdim = false) =>
        Op.Get("aten::linalg_vector_norm").Begin().T(this).D(p).IntsOrNone(dims).B(keepdim).Call();

    public Tensor Norm(double p, long dim, bool keepdim = false) => Norm(p, [dim], keepdim);

    /// <summary>Whether every element is true (non-zero); a zero-dimensional bool tensor.</summary>
    public Tensor All() => Op.Get("aten::all").Begin().T(this).Call();

    public Tensor All(long dim, bool keepdim = false) => Op.Get("aten::all", "dim").Begin().T(this).I(dim).B(keepdim).Call();
    public Tensor Any() => Op.Get("aten::any").Begin().T(this).Call();
    public Tensor Any(long dim, bool keepdim = false) => Op.Get("aten::any", "dim").Begin().T(this).I(dim).B(keepdim).Call();

    // ---- shape and views ----
    public Tensor Permute(params long[] dims) => Op.Get("aten::permute").Begin().T(this).Ints(dims).Call();
    public Tensor Transpose(long dim0, long dim1) => Op.Get("aten::transpose", "int").Begin().T(this).I(dim0).I(dim1).Call();

    /// <summary>The transpose of a matrix (tensors of at most 2 dims), as <c>tensor.t()</c>.</summary>
    public Tensor T() => Op.Get("aten::t").Begin().T(this).Call();

    public Tensor Flatten(long startDim = 0, long endDim = -1) => Op.Get("aten::flatten", "using_ints").Begin().T(this).I(startDim).I(endDim).Call();

    /// <summary>Splits dimension <paramref name="dim"/> into <paramref name="sizes"/> (one of them may be −1).</summary>
    public Tensor Unflatten(long dim, params long[] sizes) => Op.Get("aten::unflatten", "int").Begin().T(this).I(dim).Ints(sizes).Call();

    public Tensor Unsqueeze(long dim) => Op.Get("aten::unsqueeze").Begin().T(this).I(dim).Call();

    /// <summary>Drops every dimension of size 1.</summary>
    public Tensor Squeeze() => Op.Get("aten::squeeze").Begin().T(this).Call();

    /// <summary>Drops <paramref name="dim"/> if its size is 1 (otherwise returns the same shape).</summary>
    public Tensor Squeeze(long dim) => Op.Get("aten::squeeze", "dim").Begin().T(this).I(dim).Call();

    /// <summary>A broadcast view to <paramref name="size"/> (−1 keeps a dimension); no copy.</summary>
    public Tensor Expand(params long[] size) => Op.Get("aten::expand").Begin().T(this).Ints(size).Call();

    public Tensor ExpandAs(Tensor other) => Expand(other.Shape);

    /// <summary>Tiles the tensor <paramref name="repeats"/> times along each dimension (a copy).</summary>
    public Tensor Repeat(params long[] repeats) => Op.Get("aten::repeat").Begin().T(this).Ints(repeats).Call();

    /// <summary><paramref name="chunks"/> views along <paramref name="dim"/>, all but the last of equal size (there may be fewer).</summary>
    public Tensor[] Chunk(long chunks, long dim = 0) => Op.Get("aten::chunk").Begin().T(this).I(chunks).I(dim).CallMany();

    /// <summary>Views of <paramref name="splitSize"/> along <paramref name="dim"/> (the last may be smaller).</summary>
    public Tensor[] Split(long splitSize, long dim = 0) => Op.Get("aten::split", "Tensor").Begin().T(this).I(splitSize).I(dim).CallMany();

    /// <summary>Views of the given sizes along <paramref name="dim"/>; they must add up to its size.</summary>
    public Tensor[] Split(long[] splitSizes, long dim = 0) => Op.Get("aten::split_with_sizes").Begin().T(this).Ints(splitSizes).I(dim).CallMany();

    /// <summary>The view of <paramref name="length"/> elements from <paramref name="start"/> along <paramref name="dim"/>.</summary>
    public Tensor Narrow(long dim, long start, long length) => Op.Get("aten::narrow").Begin().T(this).I(dim).I(start).I(length).Call();

    public Tensor IndexSelect(long dim, Tensor index) => Op.Get("aten::index_select").Begin().T(this).I(dim).T(index).Call();

    /// <summary>out[i][j] = this[index[i][j]][j] for dim 0 (and so on), as torch.gather.</summary>
    public Tensor Gather(long dim, Tensor index) => Op.Get("aten::gather").Begin().T(this).I(dim).T(index).Call();

    /// <summary>A copy of this with <paramref name="src"/> added at <paramref name="index"/> along <paramref name="dim"/>.</summary>
    public Tensor ScatterAdd(long dim, Tensor index, Tensor src) => Op.Get("aten::scatter_add").Begin().T(this).I(dim).T(index).T(src).Call();

    // ---- in place (initialisation) ----
    public Tensor MaskedFill_(Tensor mask, double value) => Op.Get("aten::masked_fill_", "Scalar").Begin().T(this).T(mask).D(value).CallInPlace(this);
    public Tensor MaskedFill_(Tensor mask, Tensor value) => Op.Get("aten::masked_fill_", "Tensor").Begin().T(this).T(mask).T(value).CallInPlace(this);

    /// <summary>Fills with draws from U[from, to), the same numbers as PyTorch for the same generator state.</summary>
    public Tensor Uniform_(double from = 0, double to = 1, Generator? generator = null) =>
        Op.Get("aten::uniform_").Begin().T(this).D(from).D(to).Gen(generator).CallInPlace(this);

    /// <summary>Fills with draws from N(mean, std²), the same numbers as PyTorch for the same generator state.</summary>
    public Tensor Normal_(double mean = 0, double std = 1, Generator? generator = null) =>
        Op.Get("aten::normal_").Begin().T(this).D(mean).D(std).Gen(generator).CallInPlace(this);

    private static (Tensor, Tensor) ValuesAndIndices(Tensor[] results) => (results[0], results[1]);
}

internal static class OpCallOptionalArgs
{
    // Not an overload of Ints: a null array converts silently to an empty span, and an empty
    // dim list means something else than None to several reductions.
    public static OpCall IntsOrNone(this OpCall call, long[]? values) => values is null ? call.None() : call.Ints(values);

    public static OpCall DoublesOrNone(this OpCall call, double[]? values) => values is null ? call.None() : call.Doubles(values);
}
