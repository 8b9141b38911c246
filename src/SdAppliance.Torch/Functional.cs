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

    public static Tensor ConvTranspose2d(Tensor input, Tensor weight, Tensor? bias = null, long stride = 1, long padding = 0, long outputPadding = 0, long groups = 1, long dilation = 1) =>
        Op.Get("aten::conv_transpose2d", "input").Begin().T(input).T(weight).T(bias)
            .Ints([stride, stride]).Ints([padding, padding]).Ints([outputPadding, outputPadding]).I(groups).Ints([dilation, dilation]).Call();

    // ---- activations ----
    public static Tensor Relu(Tensor input) => input.Relu();
    public static Tensor Sigmoid(Tensor input) => input.Sigmoid();

    /// <summary>x·sigmoid(x).</summary>
    public static Tensor Silu(Tensor input) => Op.Get("aten::silu").Begin().T(input).Call();

    /// <summary>input = silu(input), in place (F.silu(input, inplace=True)); returns input.</summary>
    public static Tensor Silu_(Tensor input) => Op.Get("aten::silu_").Begin().T(input).CallInPlace(input);

    /// <summary>x·Φ(x); <paramref name="approximate"/> "tanh" uses the tanh formula of GPT-2 and the original BERT.</summary>
    public static Tensor Gelu(Tensor input, string approximate = "none") => Op.Get("aten::gelu").Begin().T(input).S(approximate).Call();

    /// <summary>x·sigmoid(1.702x), the GELU approximation of OpenAI's CLIP (not an aten operator).</summary>
    public static Tensor QuickGelu(Tensor input)
    {
        using var scaled = input.Mul(1.702);
        using var gate = scaled.Sigmoid();
        return input.Mul(gate);
    }

    /// <summary>x·tanh(softplus(x)).</summary>
    public static Tensor Mish(Tensor input) => Op.Get("aten::mish").Begin().T(input).Call();

    public static Tensor Softmax(Tensor input, long dim, DType? dtype = null) => input.Softmax(dim, dtype);
    public static Tensor LogSoftmax(Tensor input, long dim, DType? dtype = null) => input.LogSoftmax(dim, dtype);

    // ---- attention ----
    /// <summary>
    /// softmax(q kᵀ·scale + mask) v over [..., L, E] queries and [..., S, E] keys, as
    /// F.scaled_dot_product_attention. A bool mask keeps positions where it is true; a float mask
    /// is added to the scores. <paramref name="scale"/> defaults to 1/√E. Uses libtorch's fused
    /// kernels where the libtorch has them (2.1+), an explicit matmul-softmax otherwise.
    /// </summary>
    public static Tensor ScaledDotProductAttention(Tensor query, Tensor key, Tensor value, Tensor? attnMask = null, double dropoutP = 0, bool isCausal = false, double? scale = null)
    {
        // libtorch 2.x refuses a mask together with is_causal; refusing it everywhere keeps
        // code that works on the CPU build working on the CUDA one.
        if (isCausal && attnMask is not null)
            throw new ArgumentException("an explicit attnMask cannot be combined with isCausal", nameof(attnMask));
        // The shim reads scale <= 0 as "the default", so such a scale cannot be passed through.
        if (scale is <= 0 or double.NaN)
            throw new ArgumentOutOfRangeException(nameof(scale), scale, "scale must be positive");
        return new Tensor(LibSdTorch.sdt_scaled_dot_product_attention(query.Handle, key.Handle, value.Handle,
            attnMask?.Handle ?? IntPtr.Zero, dropoutP, isCausal ? 1 : 0, scale ?? 0));
    }

    // ---- resampling and padding ----
    /// <summary>
    /// Resizes the spatial dims of an [N, C, H, W] tensor to <paramref name="size"/> or by
    /// <paramref name="scaleFactor"/> (one value for both dims, or one per dim), as F.interpolate.
    /// Modes: nearest, nearest-exact, bilinear, bicubic, area. <paramref name="alignCorners"/> is for
    /// bilinear and bicubic only (default false); <paramref name="antialias"/> too. With a scale
    /// factor the kernels use it directly (as PyTorch does) unless <paramref name="recomputeScaleFactor"/>.
    /// </summary>
    public static Tensor Interpolate(Tensor input, long[]? size = null, double[]? scaleFactor = null, string mode = "nearest",
        bool? alignCorners = null, bool? recomputeScaleFactor = null, bool antialias = false)
    {
        if (input.Dim != 4)
            throw new ArgumentException($"Interpolate supports 4-D (N, C, H, W) input only, got {input.Dim}-D", nameof(input));
        const int spatial = 2;
        long[]? outputSize = null;
        double[]? scales = null;
        if (size is not null && scaleFactor is not null)
            throw new ArgumentException("only one of size or scaleFactor should be defined");
        if (size is not null)
        {
            outputSize = size.Length == 1 ? [size[0], size[0]] : size;
            if (outputSize.Length != spatial)
                throw new ArgumentException($"input has {spatial} spatial dimensions but size has {size.Length} values", nameof(size));
            if (recomputeScaleFactor == true)
                throw new ArgumentException("recomputeScaleFactor is not meaningful with an explicit size", nameof(recomputeScaleFactor));
        }
        else if (scaleFactor is not null)
        {
            scales = scaleFactor.Length == 1 ? [scaleFactor[0], scaleFactor[0]] : scaleFactor;
            if (scales.Length != spatial)
                throw new ArgumentException($"input has {spatial} spatial dimensions but scaleFactor has {scaleFactor.Length} values", nameof(scaleFactor));
        }
        else
        {
            throw new ArgumentException("either size or scaleFactor should be defined");
        }

        var interpolating = mode is "bilinear" or "bicubic";
        if (!interpolating && mode is not ("nearest" or "nearest-exact" or "area"))
            throw new ArgumentException($"unknown interpolation mode '{mode}' (nearest, nearest-exact, bilinear, bicubic, area)", nameof(mode));
        if (!interpolating && alignCorners is not null)
            throw new ArgumentException("alignCorners can only be set with the interpolating modes bilinear and bicubic", nameof(alignCorners));
        if (antialias && !interpolating)
            throw new ArgumentException("antialias is only supported for the bilinear and bicubic modes", nameof(antialias));

        // As PyTorch: "area" always works from an output size; a recomputed size is floor(in·scale).
        if (scales is not null && (recomputeScaleFactor == true || mode == "area"))
        {
            outputSize = [(long)Math.Floor(input.Size(2) * scales[0]), (long)Math.Floor(input.Size(3) * scales[1])];
            scales = null;
        }

        var align = alignCorners ?? false;
        return mode switch
        {
            "nearest" => Op.Get("aten::upsample_nearest2d", "vec").Begin().T(input).IntsOrNone(outputSize).DoublesOrNone(scales).Call(),
            "nearest-exact" => Op.Get("aten::_upsample_nearest_exact2d", "vec").Begin().T(input).IntsOrNone(outputSize).DoublesOrNone(scales).Call(),
            "area" => Op.Get("aten::adaptive_avg_pool2d").Begin().T(input).Ints(outputSize!).Call(),
            "bilinear" => Op.Get(antialias ? "aten::_upsample_bilinear2d_aa" : "aten::upsample_bilinear2d", "vec")
                .Begin().T(input).IntsOrNone(outputSize).B(align).DoublesOrNone(scales).Call(),
            _ => Op.Get(antialias ? "aten::_upsample_bicubic2d_aa" : "aten::upsample_bicubic2d", "vec")
                .Begin().T(input).IntsOrNone(outputSize).B(align).DoublesOrNone(scales).Call(),
        };
    }

    /// <summary>Interpolate by one scale factor for both spatial dims.</summary>
    public static Tensor Interpolate(Tensor input, double scaleFactor, string mode = "nearest", bool? alignCorners = null, bool antialias = false) =>
        Interpolate(input, null, [scaleFactor], mode, alignCorners, null, antialias);

    /// <summary>
    /// Pads the last dims: <paramref name="pad"/> is (left, right) for the last dim, then (top,
    /// bottom) for the one before, as F.pad. Modes: constant (with <paramref name="value"/>, default
    /// 0), reflect, replicate, circular.
    /// </summary>
    public static Tensor Pad(Tensor input, long[] pad, string mode = "constant", double? value = null) =>
        Op.Get("aten::pad").Begin().T(input).Ints(pad).S(mode).D(value).Call();

    // ---- losses ----
    /// <summary>Squared error, averaged ("mean"), summed ("sum") or elementwise ("none").</summary>
    public static Tensor MseLoss(Tensor input, Tensor target, string reduction = "mean") =>
        Op.Get("aten::mse_loss").Begin().T(input).T(target).I(Reduction(reduction)).Call();

    // at::Reduction's numbering.
    private static long Reduction(string reduction) => reduction switch
    {
        "none" => 0,
        "mean" => 1,
        "sum" => 2,
        _ => throw new ArgumentException($"{reduction} is not a valid value for reduction (none, mean, sum)", nameof(reduction)),
    };
}
