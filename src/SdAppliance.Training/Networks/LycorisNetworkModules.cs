using SdAppliance.Formats.Adapters;
using SdAppliance.Models.Adapters;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Training.Networks;

/// <summary>
/// LyCORIS's LoHa module (<c>algo=loha</c>) for one Linear or Conv2d: <c>hada_w1_a</c>, <c>hada_w2_a</c> [out, rank] and
/// <c>hada_w1_b</c>, <c>hada_w2_b</c> [rank, in·kh·kw], the delta <c>(w1_a·w1_b) ⊙ (w2_a·w2_b)</c> scaled by alpha/rank.
/// Initialised as LyCORIS does: w1_b and w2_b N(0, 1), w1_a N(0, 0.1²), w2_a zeros (so the module starts as nothing).
/// A Hadamard product of two rank-r products reaches rank r², which is why LyCORIS suggests a smaller dim for LoHa.
/// </summary>
public sealed class LohaNetworkModule : NetworkModule
{
    internal LohaNetworkModule(string loraName, Module layer, long rank, double alpha, Generator? generator, bool weightDecompose = false,
        bool useTucker = false)
        : base(loraName, layer, rank, alpha)
    {
        var shape = LayerWeight.Shape;
        var columns = shape.Skip(1).Aggregate(1L, (a, d) => a * d);
        var device = LayerWeight.Device;
        // LyCORIS's use_tucker applies to convolutions with a kernel larger than 1×1 only.
        IsTucker = useTucker && shape.Length == 4 && (shape[2] != 1 || shape[3] != 1);
        Tensor Parameter(string name, long[] size, double std)
        {
            var t = torch.Empty(size, DType.Float32, device);
            using (Autograd.NoGrad())
                if (std == 0) t.Zero_();
                else t.Normal_(0, std, generator);
            return RegisterParameter(name, t)!;
        }
        if (IsTucker)
        {
            // Tucker: cores [rank, rank, kh, kw] with w_a [rank, out] and w_b [rank, in]; LyCORIS draws t1, t2 first, N(0, 0.1²).
            Parameter(LoraKeys.HadaT1, [rank, rank, shape[2], shape[3]], 0.1);
            Parameter(LoraKeys.HadaT2, [rank, rank, shape[2], shape[3]], 0.1);
            Parameter(LoraKeys.HadaW1B, [rank, shape[1]], 1);
            Parameter(LoraKeys.HadaW1A, [rank, shape[0]], 0.1);
            Parameter(LoraKeys.HadaW2B, [rank, shape[1]], 1);
            Parameter(LoraKeys.HadaW2A, [rank, shape[0]], 0);
        }
        else
        {
            RegisterParameter(LoraKeys.HadaT1, null);
            RegisterParameter(LoraKeys.HadaT2, null);
            // LyCORIS draws w1_b, w1_a, w2_b in that order, then zeroes w2_a.
            Parameter(LoraKeys.HadaW1B, [rank, columns], 1);
            Parameter(LoraKeys.HadaW1A, [shape[0], rank], 0.1);
            Parameter(LoraKeys.HadaW2B, [rank, columns], 1);
            Parameter(LoraKeys.HadaW2A, [shape[0], rank], 0);
        }
        if (weightDecompose) AddWeightDecomposition();
    }

    /// <summary>Whether the factors are Tucker decompositions (hada_t1, hada_t2 cores), as LyCORIS's use_tucker makes them for a k×k convolution.</summary>
    public bool IsTucker { get; }

    public override LoraAlgorithm Algorithm => LoraAlgorithm.Loha;

    public override Tensor ZeroInitialised => GetParameter(LoraKeys.HadaW2A)!;

    public override Tensor DeltaWeight() => LoraDeltas.Loha(GetParameter(LoraKeys.HadaW1A)!, GetParameter(LoraKeys.HadaW1B)!,
        GetParameter(LoraKeys.HadaW2A)!, GetParameter(LoraKeys.HadaW2B)!, GetParameter(LoraKeys.HadaT1), GetParameter(LoraKeys.HadaT2), LayerWeight.Shape);
}

/// <summary>
/// LyCORIS's LoKr module (<c>algo=lokr</c>) for one Linear or Conv2d: the weight [out, in(, kh, kw)] as the Kronecker
/// product <c>w1 ⊗ w2</c>, out = a·b and in = c·d split by <see cref="Factorization"/> (with <c>factor</c>), w1 [a, c]
/// the small factor and w2 [b, d(·kh·kw)] the large one. w2 is low-rank (<c>lokr_w2_a</c> [b, rank] · <c>lokr_w2_b</c>
/// [rank, d·kh·kw]) when rank &lt; max(b, d)/2, else whole (<c>lokr_w2</c>, [b, d, kh, kw] for a convolution); w1 is
/// low-rank too with <c>decompose_both</c> when rank &lt; max(a, c)/2. Both whole: the scale is 1 whatever alpha (LyCORIS
/// stores alpha = rank then, and the loaders never scale a LoKr without a low-rank factor). Initialised as LyCORIS:
/// w1 (or w1_a, w1_b) and w2_a kaiming_uniform(a=√5), w2 or w2_b zeros.
/// </summary>
public sealed class LokrNetworkModule : NetworkModule
{
    internal LokrNetworkModule(string loraName, Module layer, long rank, double alpha, int factor, bool decomposeBoth, Generator? generator,
        bool weightDecompose = false, bool useTucker = false)
        : base(loraName, layer, rank, WholeFactors(layer, rank, factor, decomposeBoth) ? rank : alpha)
    {
        var shape = LayerWeight.Shape;
        var (a, b) = Factorization(shape[0], factor);
        var (c, d) = Factorization(shape[1], factor);
        var kernel = shape.Skip(2).ToArray();
        var kernelSize = kernel.Aggregate(1L, (x, y) => x * y);
        var device = LayerWeight.Device;
        Tensor Parameter(string name, long[] size, bool zero)
        {
            var t = torch.Empty(size, DType.Float32, device);
            if (zero) Init.Zeros_(t);
            else Init.KaimingUniform_(t, Math.Sqrt(5), generator);
            return RegisterParameter(name, t)!;
        }
        // The factors a layer does not use are registered absent, so that lookups of them give null.
        foreach (var part in new[] { LoraKeys.LokrW1, LoraKeys.LokrW1A, LoraKeys.LokrW1B, LoraKeys.LokrW2, LoraKeys.LokrW2A, LoraKeys.LokrW2B, LoraKeys.LokrT2 })
            RegisterParameter(part, null);
        var (w1Whole, w2Whole) = Whole(shape, rank, factor, decomposeBoth);
        // LyCORIS's use_tucker: a k×k convolution's low-rank w2 as a core [rank, rank, kh, kw] with w2_a [rank, b], w2_b [rank, d].
        IsTucker = useTucker && !w2Whole && kernel.Length == 2 && kernelSize != 1;
        // LyCORIS initialises w2 first, then w1.
        if (w2Whole) Parameter(LoraKeys.LokrW2, [b, d, .. kernel], zero: true);
        else if (IsTucker)
        {
            Parameter(LoraKeys.LokrT2, [rank, rank, .. kernel], zero: false);
            Parameter(LoraKeys.LokrW2A, [rank, b], zero: false);
            Parameter(LoraKeys.LokrW2B, [rank, d], zero: true);
        }
        else
        {
            Parameter(LoraKeys.LokrW2A, [b, rank], zero: false);
            Parameter(LoraKeys.LokrW2B, [rank, d * kernelSize], zero: true);
        }
        if (w1Whole) Parameter(LoraKeys.LokrW1, [a, c], zero: false);
        else
        {
            Parameter(LoraKeys.LokrW1A, [a, rank], zero: false);
            Parameter(LoraKeys.LokrW1B, [rank, c], zero: false);
        }
        if (weightDecompose) AddWeightDecomposition();
    }

    public override LoraAlgorithm Algorithm => LoraAlgorithm.Lokr;

    /// <summary>Whether w2 is a Tucker decomposition (lokr_t2 core), as LyCORIS's use_tucker makes it for a k×k convolution.</summary>
    public bool IsTucker { get; }

    public override Tensor ZeroInitialised => GetParameter(LoraKeys.LokrW2) ?? GetParameter(LoraKeys.LokrW2B)!;

    public override Tensor DeltaWeight()
    {
        using var w1 = GetParameter(LoraKeys.LokrW1) is { } whole1 ? whole1.Alias() : LoraDeltas.Product(GetParameter(LoraKeys.LokrW1A)!, GetParameter(LoraKeys.LokrW1B)!);
        using var w2 = GetParameter(LoraKeys.LokrW2) is { } whole2 ? whole2.Alias()
            : GetParameter(LoraKeys.LokrT2) is { } t2 ? LoraDeltas.Tucker(t2, GetParameter(LoraKeys.LokrW2A)!, GetParameter(LoraKeys.LokrW2B)!)
            : LoraDeltas.Product(GetParameter(LoraKeys.LokrW2A)!, GetParameter(LoraKeys.LokrW2B)!);
        return LoraDeltas.Lokr(w1, w2, LayerWeight.Shape);
    }

    private static bool WholeFactors(Module layer, long rank, int factor, bool decomposeBoth)
    {
        var shape = layer switch { Linear l => l.Weight.Shape, Conv2d c => c.Weight.Shape, _ => throw new ArgumentException($"LoKr wraps Linear and Conv2d layers, not {layer.GetType().Name}", nameof(layer)) };
        var (w1, w2) = Whole(shape, rank, factor, decomposeBoth);
        return w1 && w2;
    }

    // LyCORIS's rule: a factor is low-rank only when the rank is under half its larger side (w1 only with decompose_both).
    private static (bool W1, bool W2) Whole(long[] shape, long rank, int factor, bool decomposeBoth)
    {
        var (a, b) = Factorization(shape[0], factor);
        var (c, d) = Factorization(shape[1], factor);
        return (!(decomposeBoth && rank < Math.Max(a, c) / 2.0), !(rank < Math.Max(b, d) / 2.0));
    }

    /// <summary>
    /// LyCORIS's <c>factorization</c>: <paramref name="dimension"/> as m·n with m ≤ n. With a <paramref name="factor"/> &gt; 0
    /// that divides it, (factor, dimension/factor) in order; otherwise the divisor pair closest to the square root whose
    /// smaller side does not exceed the factor (-1: no limit), e.g. 128 → (8, 16), 1024 → (32, 32), 127 → (1, 127).
    /// </summary>
    public static (long Small, long Large) Factorization(long dimension, int factor = -1)
    {
        if (factor > 0 && dimension % factor == 0)
        {
            long m0 = factor, n0 = dimension / factor;
            return m0 > n0 ? (n0, m0) : (m0, n0);
        }
        var limit = factor < 0 ? dimension : factor;
        long m = 1, n = dimension;
        var length = m + n;
        while (m < n)
        {
            var next = m + 1;
            while (dimension % next != 0) next++;
            var other = dimension / next;
            if (next + other > length || next > limit) break;
            (m, n) = (next, other);
        }
        return m > n ? (n, m) : (m, n);
    }
}
