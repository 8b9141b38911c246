using SdAppliance.Torch.Native;

namespace SdAppliance.Torch;

// In-place operations, named as in PyTorch with the trailing underscore. Optimizers use them to
// update parameters and their state without allocating a new tensor per step. Each returns
// this tensor (the same handle), so calls chain as in Python: m.Mul_(b).Add_(g, 1 - b).
public sealed partial class Tensor
{
    /// <summary>this += value · tensor1 · tensor2.</summary>
    public Tensor Addcmul_(Tensor tensor1, Tensor tensor2, double value = 1) =>
        Op.Get("aten::addcmul_").Begin().T(this).T(tensor1).T(tensor2).D(value).CallInPlace(this);

    /// <summary>this += value · tensor1 / tensor2.</summary>
    public Tensor Addcdiv_(Tensor tensor1, Tensor tensor2, double value = 1) =>
        Op.Get("aten::addcdiv_").Begin().T(this).T(tensor1).T(tensor2).D(value).CallInPlace(this);

    /// <summary>this += weight · (end − this).</summary>
    public Tensor Lerp_(Tensor end, double weight) =>
        Op.Get("aten::lerp_", "Scalar").Begin().T(this).T(end).D(weight).CallInPlace(this);

    /// <summary>this += weight · (end − this), with an elementwise (broadcast) weight.</summary>
    public Tensor Lerp_(Tensor end, Tensor weight) =>
        Op.Get("aten::lerp_", "Tensor").Begin().T(this).T(end).T(weight).CallInPlace(this);

    public Tensor Sqrt_() => Op.Get("aten::sqrt_").Begin().T(this).CallInPlace(this);

    public Tensor Rsqrt_() => Op.Get("aten::rsqrt_").Begin().T(this).CallInPlace(this);

    /// <summary>Each element becomes −1, 0 or 1.</summary>
    public Tensor Sign_() => Op.Get("aten::sign_").Begin().T(this).CallInPlace(this);

    public Tensor Abs_() => Op.Get("aten::abs_").Begin().T(this).CallInPlace(this);

    public Tensor Neg_() => Op.Get("aten::neg_").Begin().T(this).CallInPlace(this);

    public Tensor Reciprocal_() => Op.Get("aten::reciprocal_").Begin().T(this).CallInPlace(this);

    public Tensor Pow_(double exponent) => Op.Get("aten::pow_", "Scalar").Begin().T(this).D(exponent).CallInPlace(this);

    /// <summary>Clamps into [min, max]; a null bound is left open.</summary>
    public Tensor Clamp_(double? min = null, double? max = null) =>
        Op.Get("aten::clamp_").Begin().T(this).D(min).D(max).CallInPlace(this);

    /// <summary>Clamps elementwise against (broadcast) bound tensors; a null bound is left open.</summary>
    public Tensor Clamp_(Tensor? min, Tensor? max) =>
        Op.Get("aten::clamp_", "Tensor").Begin().T(this).T(min).T(max).CallInPlace(this);

    public Tensor ClampMin_(double min) => Op.Get("aten::clamp_min_").Begin().T(this).D(min).CallInPlace(this);

    public Tensor ClampMin_(Tensor min) => Op.Get("aten::clamp_min_", "Tensor").Begin().T(this).T(min).CallInPlace(this);

    public Tensor ClampMax_(double max) => Op.Get("aten::clamp_max_").Begin().T(this).D(max).CallInPlace(this);

    public Tensor ClampMax_(Tensor max) => Op.Get("aten::clamp_max_", "Tensor").Begin().T(this).T(max).CallInPlace(this);

    /// <summary>this = max(this, other) elementwise, as <c>torch.maximum(self, other, out=self)</c>.</summary>
    public Tensor Maximum_(Tensor other) =>
        Op.Get("aten::maximum", "out").Begin().T(this).T(other).T(this).CallInPlace(this);
}
