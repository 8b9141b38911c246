using SdAppliance.Torch.Native;

namespace SdAppliance.Torch;

// Arithmetic, conversion and shape operations that everything else builds on.
public sealed partial class Tensor
{
    // ---- arithmetic ----
    public Tensor Add(Tensor other, double alpha = 1) => Op.Get("aten::add", "Tensor").Begin().T(this).T(other).D(alpha).Call();
    public Tensor Add(double other) => Op.Get("aten::add", "Scalar").Begin().T(this).D(other).Call();
    public Tensor Sub(Tensor other, double alpha = 1) => Op.Get("aten::sub", "Tensor").Begin().T(this).T(other).D(alpha).Call();
    public Tensor Sub(double other) => Op.Get("aten::sub", "Scalar").Begin().T(this).D(other).Call();
    public Tensor Mul(Tensor other) => Op.Get("aten::mul", "Tensor").Begin().T(this).T(other).Call();
    public Tensor Mul(double other) => Op.Get("aten::mul", "Scalar").Begin().T(this).D(other).Call();
    public Tensor Div(Tensor other) => Op.Get("aten::div", "Tensor").Begin().T(this).T(other).Call();
    public Tensor Div(double other) => Op.Get("aten::div", "Scalar").Begin().T(this).D(other).Call();
    public Tensor Neg() => Op.Get("aten::neg").Begin().T(this).Call();

    public static Tensor operator +(Tensor a, Tensor b) => a.Add(b);
    public static Tensor operator +(Tensor a, double b) => a.Add(b);
    public static Tensor operator +(double a, Tensor b) => b.Add(a);
    public static Tensor operator -(Tensor a, Tensor b) => a.Sub(b);
    public static Tensor operator -(Tensor a, double b) => a.Sub(b);
    public static Tensor operator -(double a, Tensor b) => Op.Get("aten::rsub", "Scalar").Begin().T(b).D(a).Call();
    public static Tensor operator *(Tensor a, Tensor b) => a.Mul(b);
    public static Tensor operator *(Tensor a, double b) => a.Mul(b);
    public static Tensor operator *(double a, Tensor b) => b.Mul(a);
    public static Tensor operator /(Tensor a, Tensor b) => a.Div(b);
    public static Tensor operator /(Tensor a, double b) => a.Div(b);
    public static Tensor operator /(double a, Tensor b)
    {
        // Out of place, as PyTorch's __rtruediv__: reciprocal's backward reads its result, so scaling it in place would break autograd.
        using var reciprocal = b.Reciprocal();
        return reciprocal.Mul(a);
    }

    public static Tensor operator -(Tensor a) => a.Neg();

    // ---- in place (optimizers) ----
    public Tensor Add_(Tensor other, double alpha = 1) => Op.Get("aten::add_", "Tensor").Begin().T(this).T(other).D(alpha).CallInPlace(this);
    public Tensor Add_(double other) => Op.Get("aten::add_", "Scalar").Begin().T(this).D(other).CallInPlace(this);
    public Tensor Sub_(Tensor other, double alpha = 1) => Op.Get("aten::sub_", "Tensor").Begin().T(this).T(other).D(alpha).CallInPlace(this);
    public Tensor Mul_(Tensor other) => Op.Get("aten::mul_", "Tensor").Begin().T(this).T(other).CallInPlace(this);
    public Tensor Mul_(double other) => Op.Get("aten::mul_", "Scalar").Begin().T(this).D(other).CallInPlace(this);
    public Tensor Div_(Tensor other) => Op.Get("aten::div_", "Tensor").Begin().T(this).T(other).CallInPlace(this);
    public Tensor Div_(double other) => Op.Get("aten::div_", "Scalar").Begin().T(this).D(other).CallInPlace(this);
    public Tensor Copy_(Tensor source) => Op.Get("aten::copy_").Begin().T(this).T(source).CallInPlace(this);
    public Tensor Zero_() => Op.Get("aten::zero_").Begin().T(this).CallInPlace(this);
    public Tensor Fill_(double value) => Op.Get("aten::fill_", "Scalar").Begin().T(this).D(value).CallInPlace(this);

    // ---- conversion ----
    public Tensor To(DType dtype, bool copy = false) => Op.Get("aten::to", "dtype").Begin().T(this).DT(dtype).B(false).B(copy).Call();

    public Tensor To(Device device, DType? dtype = null, bool copy = false) =>
        Op.Get("aten::to", "device").Begin().T(this).Dev(device).DT(dtype ?? DType).B(false).B(copy).Call();

    public Tensor To(string device) => To(Device.Parse(device));
    public Tensor Cpu() => To(Device.Cpu);
    public Tensor Cuda(int index = 0) => To(Device.Cuda(index));
    public Tensor Float() => To(DType.Float32);
    public Tensor Half() => To(DType.Float16);
    public Tensor BFloat16() => To(DType.BFloat16);
    public Tensor Double() => To(DType.Float64);
    public Tensor Long() => To(DType.Int64);

    public Tensor Clone() => Op.Get("aten::clone").Begin().T(this).Call();

    /// <summary>The same data, cut off from the autograd graph.</summary>
    public Tensor Detach() => Op.Get("aten::detach").Begin().T(this).Call();

    public Tensor Detach_() => Op.Get("aten::detach_").Begin().T(this).CallInPlace(this);

    public Tensor Contiguous() => Op.Get("aten::contiguous").Begin().T(this).Call();

    // ---- shape ----
    public Tensor Reshape(params long[] shape) => Op.Get("aten::reshape").Begin().T(this).Ints(shape).Call();
    public Tensor View(params long[] shape) => Op.Get("aten::view").Begin().T(this).Ints(shape).Call();
}
