using SdAppliance.Torch.Native;

namespace SdAppliance.Torch;

// Arithmetic, conversion and shape operations that everything else builds on.
public sealed partial class Tensor
{
    // ---- arithmetic ----
    public Tensor Add(Tensor other, double alpha = 1) => Hot.Add.Begin().T(this).T(other).D(alpha).Call();
    public Tensor Add(double other) => Hot.AddScalar.Begin().T(this).D(other).Call();
    public Tensor Sub(Tensor other, double alpha = 1) => Hot.Sub.Begin().T(this).T(other).D(alpha).Call();
    public Tensor Sub(double other) => Hot.SubScalar.Begin().T(this).D(other).Call();
    public Tensor Mul(Tensor other) => Hot.Mul.Begin().T(this).T(other).Call();
    public Tensor Mul(double other) => Hot.MulScalar.Begin().T(this).D(other).Call();
    public Tensor Div(Tensor other) => Hot.Div.Begin().T(this).T(other).Call();
    public Tensor Div(double other) => Hot.DivScalar.Begin().T(this).D(other).Call();
    public Tensor Neg() => Hot.Neg.Begin().T(this).Call();

    public static Tensor operator +(Tensor a, Tensor b) => a.Add(b);
    public static Tensor operator +(Tensor a, double b) => a.Add(b);
    public static Tensor operator +(double a, Tensor b) => b.Add(a);
    public static Tensor operator -(Tensor a, Tensor b) => a.Sub(b);
    public static Tensor operator -(Tensor a, double b) => a.Sub(b);
    public static Tensor operator -(double a, Tensor b) => Hot.RsubScalar.Begin().T(b).D(a).Call();
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
    public Tensor Add_(Tensor other, double alpha = 1) => Hot.Add_.Begin().T(this).T(other).D(alpha).CallInPlace(this);
    public Tensor Add_(double other) => Hot.AddScalar_.Begin().T(this).D(other).CallInPlace(this);
    public Tensor Sub_(Tensor other, double alpha = 1) => Hot.Sub_.Begin().T(this).T(other).D(alpha).CallInPlace(this);
    public Tensor Mul_(Tensor other) => Hot.Mul_.Begin().T(this).T(other).CallInPlace(this);
    public Tensor Mul_(double other) => Hot.MulScalar_.Begin().T(this).D(other).CallInPlace(this);
    public Tensor Div_(Tensor other) => Hot.Div_.Begin().T(this).T(other).CallInPlace(this);
    public Tensor Div_(double other) => Hot.DivScalar_.Begin().T(this).D(other).CallInPlace(this);
    public Tensor Copy_(Tensor source) => Hot.Copy_.Begin().T(this).T(source).CallInPlace(this);
    public Tensor Zero_() => Hot.Zero_.Begin().T(this).CallInPlace(this);
    public Tensor Fill_(double value) => Hot.FillScalar_.Begin().T(this).D(value).CallInPlace(this);

    // The operators of per-step loops (optimizers, schedulers, elementwise arithmetic), resolved once:
    // Op.Get hashes two strings on every call (about 20 ns of an add's 1 µs, measured by bench-engine's
    // breakdown), a static field costs nothing.
    private static class Hot
    {
        public static readonly Op Add = Op.Get("aten::add", "Tensor");
        public static readonly Op AddScalar = Op.Get("aten::add", "Scalar");
        public static readonly Op Sub = Op.Get("aten::sub", "Tensor");
        public static readonly Op SubScalar = Op.Get("aten::sub", "Scalar");
        public static readonly Op Mul = Op.Get("aten::mul", "Tensor");
        public static readonly Op MulScalar = Op.Get("aten::mul", "Scalar");
        public static readonly Op Div = Op.Get("aten::div", "Tensor");
        public static readonly Op DivScalar = Op.Get("aten::div", "Scalar");
        public static readonly Op Neg = Op.Get("aten::neg");
        public static readonly Op RsubScalar = Op.Get("aten::rsub", "Scalar");
        public static readonly Op Add_ = Op.Get("aten::add_", "Tensor");
        public static readonly Op AddScalar_ = Op.Get("aten::add_", "Scalar");
        public static readonly Op Sub_ = Op.Get("aten::sub_", "Tensor");
        public static readonly Op Mul_ = Op.Get("aten::mul_", "Tensor");
        public static readonly Op MulScalar_ = Op.Get("aten::mul_", "Scalar");
        public static readonly Op Div_ = Op.Get("aten::div_", "Tensor");
        public static readonly Op DivScalar_ = Op.Get("aten::div_", "Scalar");
        public static readonly Op Copy_ = Op.Get("aten::copy_");
        public static readonly Op Zero_ = Op.Get("aten::zero_");
        public static readonly Op FillScalar_ = Op.Get("aten::fill_", "Scalar");
    }

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
