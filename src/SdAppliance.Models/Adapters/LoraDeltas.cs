using SdAppliance.Torch;

namespace SdAppliance.Models.Adapters;

/// <summary>
/// How each adapter algorithm turns its factors into a weight delta, the arithmetic A1111's built-in Lora extension
/// (<c>network_lora.py</c>, <c>network_hada.py</c>, <c>network_lokr.py</c>, <c>lyco_helpers.py</c>) and ComfyUI
/// (<c>comfy/weight_adapter</c>) apply, unscaled (the caller multiplies by alpha/rank and the strength). One place for
/// it, so the trainer's forward and the generation path's merge cannot disagree. The results are new tensors the
/// caller owns; they keep autograd's graph, so training differentiates through them.
/// </summary>
public static class LoraDeltas
{
    /// <summary>LoRA/LoCon: <c>up · down</c> (each flattened past its first dimension), in <paramref name="shape"/>.</summary>
    public static Tensor Lora(Tensor up, Tensor down, long[] shape)
    {
        using var product = Product(up, down);
        return product.Reshape(shape);
    }

    /// <summary>
    /// LoHa: <c>(w1_a · w1_b) ⊙ (w2_a · w2_b)</c>, w1_a/w2_a [out, rank] and w1_b/w2_b [rank, in·kh·kw]; with the Tucker
    /// cores <paramref name="t1"/>/<paramref name="t2"/> [rank, rank, kh, kw] each factor is <see cref="Tucker"/> of its
    /// core and its w_a [rank, out], w_b [rank, in] instead.
    /// </summary>
    public static Tensor Loha(Tensor w1a, Tensor w1b, Tensor w2a, Tensor w2b, Tensor? t1, Tensor? t2, long[] shape)
    {
        using var first = t1 is null ? Product(w1a, w1b) : Tucker(t1, w1a, w1b);
        using var second = t2 is null ? Product(w2a, w2b) : Tucker(t2, w2a, w2b);
        using var hadamard = first.Mul(second);
        return hadamard.Reshape(shape);
    }

    /// <summary>
    /// LoKr: <c>kron(w1, w2)</c> in <paramref name="shape"/>; a 4-D w2 [b, d, kh, kw] (a convolution's whole second
    /// factor) makes w1 [a, c] a [a, c, 1, 1], so the product is [a·b, c·d, kh, kw], as A1111's <c>make_kron</c>.
    /// </summary>
    public static Tensor Lokr(Tensor w1, Tensor w2, long[] shape)
    {
        using var first = w2.Dim == 4 ? w1.Reshape([.. w1.Shape, 1, 1]) : w1.Alias();
        using var kron = first.Kron(w2);
        return kron.Reshape(shape);
    }

    /// <summary><c>a · b</c> of two matrices, b flattened past its first dimension (a convolution's [rank, in, kh, kw]).</summary>
    public static Tensor Product(Tensor a, Tensor b)
    {
        using var a2 = a.Flatten(1);
        using var b2 = b.Flatten(1);
        return a2.Mm(b2);
    }

    /// <summary>
    /// LyCORIS's Tucker rebuild (A1111's <c>make_weight_cp</c>): <c>out[p, r, k, l] = Σ_ij t[i, j, k, l] · wa[i, p] · wb[j, r]</c>,
    /// core <paramref name="t"/> [rank, rank, kh, kw], <paramref name="wa"/> [rank, out], <paramref name="wb"/> [rank, in] → [out, in, kh, kw].
    /// </summary>
    public static Tensor Tucker(Tensor t, Tensor wa, Tensor wb)
    {
        using var a = wa.Flatten(1);
        using var b = wb.Flatten(1);
        using var spatialFirst = t.Permute(2, 3, 0, 1);  // [k, l, i, j]
        using var byIn = spatialFirst.Matmul(b);          // [k, l, i, in]
        using var swapped = byIn.Transpose(2, 3);         // [k, l, in, i]
        using var byOut = swapped.Matmul(a);              // [k, l, in, out]
        using var permuted = byOut.Permute(3, 2, 0, 1);   // [out, in, k, l]
        return permuted.Contiguous();
    }

    /// <summary>
    /// DoRA (LyCORIS's weight decomposition, as A1111 and ComfyUI merge it): the scaled delta added to
    /// <paramref name="weight"/>, then each column renormalised to its learned magnitude,
    /// <c>(W + ΔW) · dora_scale / ‖W + ΔW‖</c>, returned as the difference from <paramref name="weight"/> (the caller
    /// multiplies it by the strength). The norm is over every dimension but the input channels (dimension 1), so
    /// <paramref name="doraScale"/> is [1, in, 1…], as LyCORIS writes it; a [out, 1, 1…] one (LyCORIS's wd_on_out, which
    /// A1111 also reads) takes the norm of each output row instead. All three tensors in one dtype.
    /// </summary>
    public static Tensor Dora(Tensor weight, Tensor scaledDelta, Tensor doraScale)
    {
        using var merged = weight.Add(scaledDelta);
        using var norm = ColumnNorms(merged, PerOutput(weight, doraScale));
        using var ratio = doraScale.Div(norm);
        using var decomposed = merged.Mul(ratio);
        return decomposed.Sub(weight);
    }

    /// <summary>The norms DoRA divides by: of each input column (shape [1, in, 1…]), or of each output row with <paramref name="perOutput"/> ([out, 1, 1…]).</summary>
    public static Tensor ColumnNorms(Tensor weight, bool perOutput = false)
    {
        var ones = Enumerable.Repeat(1L, weight.Dim - 1).ToArray();
        if (perOutput)
        {
            using var rows = weight.Reshape(weight.Shape[0], -1);
            using var rowNorms = rows.Norm(2, 1, keepdim: true);
            return rowNorms.Reshape([weight.Shape[0], .. ones]);
        }
        using var transposed = weight.Transpose(0, 1);
        using var columns = transposed.Reshape(weight.Shape[1], -1);
        using var norms = columns.Norm(2, 1, keepdim: true);
        using var shaped = norms.Reshape([weight.Shape[1], .. ones]);
        return shaped.Transpose(0, 1).Contiguous();
    }

    // LyCORIS's default magnitude vector is [1, in, …]; one whose first dimension is the output width is per output row.
    private static bool PerOutput(Tensor weight, Tensor doraScale) => doraScale.Shape[0] != 1 && doraScale.Shape[0] == weight.Shape[0];
}
