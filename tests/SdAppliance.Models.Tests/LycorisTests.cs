using SdAppliance.Formats;
using SdAppliance.Formats.Adapters;
using SdAppliance.Models.Adapters;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using SdAppliance.Torch.Serialization;

namespace SdAppliance.Models.Tests;

/// <summary>
/// LyCORIS files (LoHa, LoKr, their Tucker forms, DoRA) read by the generation path and merged as A1111's Lora extension
/// and ComfyUI merge them: every expected weight is worked out here element by element, in double precision, from the
/// formulas as those loaders write them, not through <see cref="LoraDeltas"/>.
/// </summary>
public sealed class LycorisTests : IDisposable
{
    private readonly string folder = Directory.CreateTempSubdirectory("sdapp-lycoris-").FullName;

    public void Dispose() => Directory.Delete(folder, recursive: true);

    /// <summary>attn1.to_q (Linear 4 → 3), proj_in (1×1 conv 4 → 3) and conv (3×3 conv 4 → 6), under diffusers-like names.</summary>
    private sealed class Block : Module
    {
        public Block(Generator g)
        {
            RegisterModule("attn1", new Attn(g));
            RegisterModule("proj_in", new Conv2d(4, 3, 1, generator: g));
            RegisterModule("conv", new Conv2d(4, 6, 3, padding: 1, generator: g));
        }

        public sealed class Attn : Module
        {
            public Attn(Generator g) => RegisterModule("to_q", new Linear(4, 3, generator: g));
        }
    }

    private static float[] Values(int count, double start, double step) => [.. Enumerable.Range(0, count).Select(i => (float)(start + step * i))];

    private static SafetensorsTensor T(string key, long[] shape, float[] values) => new(key, SafetensorsDType.F32, shape, Bytes(values));

    private string Write(string name, params SafetensorsTensor[] tensors)
    {
        var path = Path.Combine(folder, name + ".safetensors");
        SafetensorsFile.Write(path, tensors);
        return path;
    }

    private static float[] Merge(Block model, string path, double multiplier, string layer)
    {
        using var file = LoraFile.Load(path);
        using var patch = LoraPatch.Apply([new LoraApplication(file, multiplier)], new Dictionary<LoraTarget, Module> { [LoraTarget.Unet] = model });
        Assert.Empty(patch.Unmatched);
        return Weight(model, layer).ToArray<float>();
    }

    private static Tensor Weight(Block model, string layer) => model.GetSubmodule(layer) switch
    {
        Linear l => l.Weight,
        Conv2d c => c.Weight,
        _ => throw new InvalidOperationException(layer),
    };

    // a [n, k] · b [k, m] in double.
    private static double[,] MatMul(float[] a, float[] b, int n, int k, int m)
    {
        var r = new double[n, m];
        for (var i = 0; i < n; i++)
            for (var j = 0; j < m; j++)
                for (var t = 0; t < k; t++)
                    r[i, j] += (double)a[i * k + t] * b[t * m + j];
        return r;
    }

    [Fact]
    public void LohaMergesTheHadamardProductOfItsTwoLowRankProductsTimesAlphaOverRank()
    {
        using var model = new Block(new Generator(1));
        var before = Weight(model, "attn1.to_q").ToArray<float>();
        float[] w1a = Values(6, 0.5, -0.1), w1b = Values(8, -0.3, 0.1), w2a = Values(6, 0.2, 0.15), w2b = Values(8, 0.4, -0.05);
        var path = Write("loha",
            T("lora_unet_attn1_to_q.hada_w1_a", [3, 2], w1a), T("lora_unet_attn1_to_q.hada_w1_b", [2, 4], w1b),
            T("lora_unet_attn1_to_q.hada_w2_a", [3, 2], w2a), T("lora_unet_attn1_to_q.hada_w2_b", [2, 4], w2b),
            T("lora_unet_attn1_to_q.alpha", [], [1f]));
        using (var file = LoraFile.Load(path))
        {
            var module = Assert.Single(file.Modules);
            Assert.Equal(LoraAlgorithm.Loha, module.Algorithm);
            Assert.Equal((2L, 0.5), (module.Rank!.Value, module.Scale));  // A1111: dim = hada_w1_b rows, scale alpha/dim
        }
        var after = Merge(model, path, 0.8, "attn1.to_q");
        var first = MatMul(w1a, w1b, 3, 2, 4);
        var second = MatMul(w2a, w2b, 3, 2, 4);
        for (var o = 0; o < 3; o++)
            for (var i = 0; i < 4; i++)
                AssertClose(before[o * 4 + i] + 0.8 * 0.5 * first[o, i] * second[o, i], after[o * 4 + i], $"[{o}, {i}]");
    }

    [Fact]
    public void LokrMergesTheKroneckerProductScaledOnlyWhenAFactorIsLowRank()
    {
        // to_q is 3 × 4: w1 [1, 2] ⊗ w2 [3, 2]; w2 as w2_a [3, 1] · w2_b [1, 2], so rank 1 and scale alpha/1.
        float[] w1 = [0.5f, -1.5f], w2a = [1f, 2f, -1f], w2b = [0.25f, 0.75f];
        var decomposed = Write("lokr",
            T("lora_unet_attn1_to_q.lokr_w1", [1, 2], w1), T("lora_unet_attn1_to_q.lokr_w2_a", [3, 1], w2a),
            T("lora_unet_attn1_to_q.lokr_w2_b", [1, 2], w2b), T("lora_unet_attn1_to_q.alpha", [], [0.5f]));
        using (var model = new Block(new Generator(2)))
        {
            var before = Weight(model, "attn1.to_q").ToArray<float>();
            var after = Merge(model, decomposed, 1.0, "attn1.to_q");
            // kron: out row o = p·3 + q, column i = s·2 + t is w1[p, s] · w2[q, t] (here p = 0).
            for (var q = 0; q < 3; q++)
                for (var s = 0; s < 2; s++)
                    for (var t = 0; t < 2; t++)
                        AssertClose(before[q * 4 + s * 2 + t] + 0.5 * w1[s] * ((double)w2a[q] * w2b[t]), after[q * 4 + s * 2 + t], $"[{q}, {s * 2 + t}]");
        }

        // Both factors whole: the loaders take no rank, so alpha (7 here) is not applied.
        float[] w2 = [1f, 2f, 3f, 4f, 5f, 6f];
        var whole = Write("lokr-full", T("lora_unet_attn1_to_q.lokr_w1", [1, 2], w1), T("lora_unet_attn1_to_q.lokr_w2", [3, 2], w2),
            T("lora_unet_attn1_to_q.alpha", [], [7f]));
        using (var file = LoraFile.Load(whole)) Assert.Equal((null, 1.0), (Assert.Single(file.Modules).Rank, file.Modules[0].Scale));
        using (var model = new Block(new Generator(2)))
        {
            var before = Weight(model, "attn1.to_q").ToArray<float>();
            var after = Merge(model, whole, 0.5, "attn1.to_q");
            for (var q = 0; q < 3; q++)
                for (var s = 0; s < 2; s++)
                    for (var t = 0; t < 2; t++)
                        AssertClose(before[q * 4 + s * 2 + t] + 0.5 * w1[s] * w2[q * 2 + t], after[q * 4 + s * 2 + t], $"whole [{q}, {s * 2 + t}]");
        }
    }

    [Fact]
    public void LokrOfAConvolutionKeepsTheKernelInItsSecondFactor()
    {
        // conv is [6, 4, 3, 3]: w1 [2, 2] ⊗ w2 [3, 2, 3, 3] (whole, 4-D) is [6, 4, 3, 3]; the low-rank form of the same
        // w2 is [3, 2·3·3] flattened, which must land on the same elements.
        using var model = new Block(new Generator(3));
        var before = Weight(model, "conv").ToArray<float>();
        float[] w1 = [1f, -2f, 0.5f, 3f];
        var w2 = Values(3 * 2 * 9, -1, 0.04);
        var path = Write("lokr-conv", T("lora_unet_conv.lokr_w1", [2, 2], w1), T("lora_unet_conv.lokr_w2", [3, 2, 3, 3], w2));
        var after = Merge(model, path, 1.0, "conv");
        for (var p = 0; p < 2; p++)
            for (var q = 0; q < 3; q++)
                for (var s = 0; s < 2; s++)
                    for (var t = 0; t < 2; t++)
                        for (var k = 0; k < 9; k++)
                        {
                            var index = (((p * 3 + q) * 4) + (s * 2 + t)) * 9 + k;
                            AssertClose(before[index] + (double)w1[p * 2 + s] * w2[(q * 2 + t) * 9 + k], after[index], $"element {index}");
                        }

        // The same w2 as w2_a = identity-like [3, 3] · w2_b = w2 as [3, 18]: rank 3, alpha 3, scale 1.
        using var second = new Block(new Generator(3));
        float[] eye = [1, 0, 0, 0, 1, 0, 0, 0, 1];
        var lowRank = Write("lokr-conv-lr", T("lora_unet_conv.lokr_w1", [2, 2], w1), T("lora_unet_conv.lokr_w2_a", [3, 3], eye),
            T("lora_unet_conv.lokr_w2_b", [3, 18], w2), T("lora_unet_conv.alpha", [], [3f]));
        Assert.Equal(after, Merge(second, lowRank, 1.0, "conv"));
    }

    [Fact]
    public void TuckerLohaRebuildsEachFactorFromItsCore()
    {
        // hada_t1 [r, r, 3, 3] with w1_a [r, out] and w1_b [r, in]: factor[o, i, k] = Σ_ab t[a, b, k] · w_a[a, o] · w_b[b, i].
        using var model = new Block(new Generator(4));
        var before = Weight(model, "conv").ToArray<float>();
        const int r = 2;
        var t1 = Values(r * r * 9, 0.3, -0.02);
        var t2 = Values(r * r * 9, -0.2, 0.03);
        var w1a = Values(r * 6, 0.1, 0.05);
        var w1b = Values(r * 4, -0.4, 0.1);
        var w2a = Values(r * 6, 0.6, -0.07);
        var w2b = Values(r * 4, 0.2, 0.02);
        var path = Write("loha-tucker",
            T("lora_unet_conv.hada_t1", [r, r, 3, 3], t1), T("lora_unet_conv.hada_w1_a", [r, 6], w1a), T("lora_unet_conv.hada_w1_b", [r, 4], w1b),
            T("lora_unet_conv.hada_t2", [r, r, 3, 3], t2), T("lora_unet_conv.hada_w2_a", [r, 6], w2a), T("lora_unet_conv.hada_w2_b", [r, 4], w2b),
            T("lora_unet_conv.alpha", [], [4f]));
        var after = Merge(model, path, 1.0, "conv");
        double Factor(float[] t, float[] wa, float[] wb, int o, int i, int k)
        {
            double sum = 0;
            for (var a = 0; a < r; a++)
                for (var b = 0; b < r; b++)
                    sum += (double)t[(a * r + b) * 9 + k] * wa[a * 6 + o] * wb[b * 4 + i];
            return sum;
        }
        for (var o = 0; o < 6; o++)
            for (var i = 0; i < 4; i++)
                for (var k = 0; k < 9; k++)
                {
                    var index = (o * 4 + i) * 9 + k;
                    // alpha 4 / rank 2 (hada_w1_b's rows) = 2.
                    AssertClose(before[index] + 2 * Factor(t1, w1a, w1b, o, i, k) * Factor(t2, w2a, w2b, o, i, k), after[index], $"element {index}");
                }
    }

    [Fact]
    public void DoraRenormalisesEachInputColumnOfTheMergedWeightToItsMagnitude()
    {
        using var model = new Block(new Generator(5));
        var before = Weight(model, "attn1.to_q").ToArray<float>();
        float[] down = [0.5f, -0.25f, 1f, 0.75f], up = [1f, -2f, 0.5f];  // rank 1
        float[] magnitude = [0.9f, 1.7f, 0.4f, 2.2f];                        // [1, in]: LyCORIS's per-input layout
        var path = Write("dora",
            T("lora_unet_attn1_to_q.lora_down.weight", [1, 4], down), T("lora_unet_attn1_to_q.lora_up.weight", [3, 1], up),
            T("lora_unet_attn1_to_q.alpha", [], [0.5f]), T("lora_unet_attn1_to_q.dora_scale", [1, 4], magnitude));
        const double multiplier = 0.6;
        var after = Merge(model, path, multiplier, "attn1.to_q");
        // A1111/ComfyUI: W1 = W + (alpha/rank)·up·down; each column i of W1 scaled to dora_scale[i] / ‖W1[:, i]‖;
        // the strength interpolates between W and that.
        for (var i = 0; i < 4; i++)
        {
            var merged = Enumerable.Range(0, 3).Select(o => before[o * 4 + i] + 0.5 * up[o] * down[i]).ToArray();
            var norm = Math.Sqrt(merged.Sum(v => v * v));
            for (var o = 0; o < 3; o++)
                AssertClose(before[o * 4 + i] + multiplier * (merged[o] * magnitude[i] / norm - before[o * 4 + i]), after[o * 4 + i], $"[{o}, {i}]");
        }
        // Each column's direction is the merged one and its length the magnitude: at strength 1 the norms are dora_scale.
        using var full = new Block(new Generator(5));
        var atOne = Merge(full, path, 1.0, "attn1.to_q");
        for (var i = 0; i < 4; i++)
            AssertClose(magnitude[i], (float)Math.Sqrt(Enumerable.Range(0, 3).Sum(o => (double)atOne[o * 4 + i] * atOne[o * 4 + i])), $"norm {i}");
    }

    [Fact]
    public void IncompleteMixedOrUnknownLycorisModulesAreRefusedNamingTheModule()
    {
        var half = Write("half", T("lora_unet_attn1_to_q.hada_w1_a", [3, 2], new float[6]), T("lora_unet_attn1_to_q.hada_w1_b", [2, 4], new float[8]));
        var e = Assert.Throws<UserInputException>(() => LoraFile.Load(half));
        Assert.Contains("attn1_to_q", e.Message);
        Assert.Contains("hada_w2_a", e.Message);

        var mixed = Write("mixed", T("lora_unet_attn1_to_q.lokr_w1", [1, 2], new float[2]), T("lora_unet_attn1_to_q.lokr_w2", [3, 2], new float[6]),
            T("lora_unet_attn1_to_q.lora_down.weight", [1, 4], new float[4]));
        Assert.Contains("mixes", Assert.Throws<UserInputException>(() => LoraFile.Load(mixed)).Message);

        var oft = Write("oft", T("lora_unet_attn1_to_q.oft_blocks", [1, 3, 3], new float[9]), T("lora_unet_attn1_to_q.alpha", [], [1f]));
        var refusal = Assert.Throws<UserInputException>(() => LoraFile.Load(oft));
        Assert.Contains("oft_blocks", refusal.Message);
        Assert.Contains("LoHa, LoKr and DoRA", refusal.Message);

        // Factors that do not make the layer's weight: the refusal names the module and every factor's shape.
        var wrong = Write("wrong", T("lora_unet_attn1_to_q.lokr_w1", [2, 2], new float[4]), T("lora_unet_attn1_to_q.lokr_w2", [3, 2], new float[6]));
        using var model = new Block(new Generator(6));
        using var file = LoraFile.Load(wrong);
        var misfit = Assert.Throws<UserInputException>(() => LoraPatch.Apply([new LoraApplication(file, 1.0)], new Dictionary<LoraTarget, Module> { [LoraTarget.Unet] = model }));
        Assert.Contains("attn1_to_q", misfit.Message);
        Assert.Contains("lokr_w1 [2, 2]", misfit.Message);
    }

    private static byte[] Bytes(float[] values) => System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray();

    // float32 weights plus a float32 delta of order 1, computed in float32: a few ulps of the larger of the two.
    private static void AssertClose(double expected, float actual, string what) =>
        Assert.True(Math.Abs(expected - actual) <= 2e-6 * Math.Max(1, Math.Abs(expected)), $"{what}: {actual} vs {expected}");
}
