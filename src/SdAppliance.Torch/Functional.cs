using SdAppliance.Torch.Native;

namespace SdAppliance.Torch;

/// <summary><c>torch.nn.functional</c>: the stateless layers the modules in <c>Nn</c> call.</summary>
public static class Functional
{
    /// <summary>y = x Wᵀ + b, with W of shape [out, in].</summary>
    public static Tensor Linear(Tensor input, Tensor weight, Tensor? bias = null) =>
        Op.Get("aten::linear").Begin().T(input).T(weight).T(bias).Call();

    public static Tensor Conv2d(Tensor input, Tensor weight, Tensor? bias = null, long stride = 1, long padding = 0, long dilation = 1, long groups = 1) =>
        Conv2d(input, weight, bias, [stride, stride], [padding, padding], [dilation, dilation], groups);

    public static Tensor Conv2d(Tensor input, Tensor weight, Tensor? bias, long[] stride, long[] padding, long[] dilation, long groups = 1) =>
        Op.Get("aten::conv2d").Begin().T(input).T(weight).T(bias).Ints(stride).Ints(padding).Ints(dilation).I(groups).Call();

    public static Tensor GroupNorm(Tensor input, long numGroups, Tensor? weight = null, Tensor? bias = null, double eps = 1e-5) =>
        Op.Get("aten::group_norm").Begin().T(input).I(numGroups).T(weight).T(bias).D(eps).Call();

    public static Tensor LayerNorm(Tensor input, long[] normalizedShape, Tensor? weight = null, Tensor? bias = null, double eps = 1e-5) =>
        Op.Get("aten::layer_norm").Begin().T(input).Ints(normalizedShape).T(weight).T(bias).D(eps).Call();

    /// <summary>Rows of <paramref name="weight"/> picked by the integer <paramref name="indices"/>.</summary>
    public static Tensor Embedding(Tensor indices, Tensor weight) =>
        Op.Get("aten::embedding").Begin().T(weight).T(indices).Call();

    /// <summary>Zeroes elements with probability p and scales the rest by 1/(1-p), in training only.</summary>
    public static Tensor Dropout(Tensor input, double p = 0.5, bool training = true) =>
        Op.Get("aten::dropout").Begin().T(input).D(p).B(training).Call();
}
