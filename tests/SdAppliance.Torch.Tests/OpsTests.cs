using static SdAppliance.Torch.Tests.TestSupport;

namespace SdAppliance.Torch.Tests;

/// <summary>Forward values, shapes and errors of the Tensor methods and torch.* functions.</summary>
public class OpsTests
{
    // ---- matrix products ----
    // Small integers: every product and sum is exact in float32, so results compare exactly.
    [Fact]
    public void MatmulOfMatrices()
    {
        using var a = torch.Tensor([1f, 2, 3, 4, 5, 6], 2, 3);
        using var b = torch.Tensor([7f, 8, 9, 10, 11, 12], 3, 2);
        using var c = a.Matmul(b);
        using var d = a.Mm(b);
        using var e = torch.Matmul(a, b);
        Assert.Equal([2L, 2], c.Shape);
        Assert.Equal([58f, 64, 139, 154], c.ToArray<float>());
        Assert.Equal(c.ToArray<float>(), d.ToArray<float>());
        Assert.Equal(c.ToArray<float>(), e.ToArray<float>());
    }

    [Fact]
    public void MatmulBroadcastsBatchDimensions()
    {
        var av = Enumerable.Range(0, 12).Select(i => (double)i - 5).ToArray();
        var bv = Enumerable.Range(0, 6).Select(i => (double)(i * i) - 3).ToArray();
        using var a = torch.Tensor(av, 2, 2, 3);
        using var b = torch.Tensor(bv, 3, 2);
        using var c = a.Matmul(b);
        Assert.Equal([2L, 2, 2], c.Shape);
        var expected = MatMul(av, bv, 2, 3, 2, 0).Concat(MatMul(av, bv, 2, 3, 2, 6)).ToArray();
        Assert.Equal(expected, c.ToArray<double>());
    }

    [Fact]
    public void MatmulShapeMismatchCarriesLibtorchMessage()
    {
        using var a = torch.Zeros([2, 3]);
        using var b = torch.Zeros([2, 3]);
        var e = Assert.Throws<TorchException>(() => a.Matmul(b));
        Assert.Contains("mat1 and mat2 shapes cannot be multiplied (2x3 and 2x3)", e.Message);
        using var ok = torch.Ones([3, 3]);
        using var c = a.Matmul(ok);
        Assert.Equal([2L, 3], c.Shape);
    }

    [Fact]
    public void BmmAndBaddbmm()
    {
        var av = Enumerable.Range(0, 12).Select(i => (double)(i % 5) - 2).ToArray();
        var bv = Enumerable.Range(0, 12).Select(i => (double)(i % 7) - 3).ToArray();
        var sv = Enumerable.Range(0, 8).Select(i => (double)i).ToArray();
        using var a = torch.Tensor(av, 2, 2, 3);
        using var b = torch.Tensor(bv, 2, 3, 2);
        using var self = torch.Tensor(sv, 2, 2, 2);
        using var p = a.Bmm(b);
        var expected = MatMul(av, bv, 2, 3, 2, 0, 0).Concat(MatMul(av, bv, 2, 3, 2, 6, 6)).ToArray();
        Assert.Equal(expected, p.ToArray<double>());

        using var r = self.Baddbmm(a, b, beta: 0.5, alpha: 2);
        using var rt = torch.Baddbmm(self, a, b, 0.5, 2);
        var expectedR = expected.Select((x, i) => 0.5 * sv[i] + 2 * x).ToArray();
        Assert.Equal(expectedR, r.ToArray<double>());
        Assert.Equal(expectedR, rt.ToArray<double>());

        // baddbmm broadcasts self: a [2, 1] bias added to every batch.
        using var bias = torch.Tensor([100.0, 200.0], 2, 1);
        using var rb = bias.Baddbmm(a, b);
        var expectedB = expected.Select((x, i) => x + (i / 2 % 2 == 0 ? 100 : 200)).ToArray();
        Assert.Equal(expectedB, rb.ToArray<double>());
    }

    [Fact]
    public void BmmRejectsMatrices()
    {
        using var a = torch.Zeros([2, 3]);
        var e = Assert.Throws<TorchException>(() => a.Bmm(a));
        Assert.Contains("batch1 must be a 3D tensor", e.Message);
    }

    // ---- activations ----
    private static readonly float[] Xs = [-3f, -1.5f, -0.25f, 0f, 0.5f, 2f, 3f];

    [Fact]
    public void SigmoidTanhRelu()
    {
        using var x = torch.Tensor(Xs);
        using var s = x.Sigmoid();
        using var t = x.Tanh();
        using var r = x.Relu();
        AssertClose(Xs.Select(v => Sigmoid(v)).ToArray(), s);
        AssertClose(Xs.Select(v => Math.Tanh(v)).ToArray(), t);
        Assert.Equal(Xs.Select(v => Math.Max(v, 0f)).ToArray(), r.ToArray<float>());
    }

    [Fact]
    public void SoftmaxAlongADimension()
    {
        float[] v = [1, 2, 3, -1, 0, 5];
        using var x = torch.Tensor(v, 2, 3);
        using var s1 = x.Softmax(1);
        using var s0 = x.Softmax(0);
        using var ls = x.LogSoftmax(-1);
        var expected1 = new double[6];
        var expectedLog = new double[6];
        for (var r = 0; r < 2; r++)
        {
            var z = Enumerable.Range(0, 3).Sum(c => Math.Exp(v[r * 3 + c]));
            for (var c = 0; c < 3; c++)
            {
                expected1[r * 3 + c] = Math.Exp(v[r * 3 + c]) / z;
                expectedLog[r * 3 + c] = v[r * 3 + c] - Math.Log(z);
            }
        }
        var expected0 = new double[6];
        for (var c = 0; c < 3; c++)
        {
            var z = Math.Exp(v[c]) + Math.Exp(v[3 + c]);
            expected0[c] = Math.Exp(v[c]) / z;
            expected0[3 + c] = Math.Exp(v[3 + c]) / z;
        }
        AssertClose(expected1, s1);
        AssertClose(expected0, s0);
        AssertClose(expectedLog, ls);
    }

    [Fact]
    public void SoftmaxInAnotherDtypeCastsFirst()
    {
        using var x32 = torch.Tensor([0f, 1f]);
        using var x = x32.Half();
        using var s = x.Softmax(0, DType.Float32);
        Assert.Equal(DType.Float32, s.DType);
        AssertClose([1 / (1 + Math.E), Math.E / (1 + Math.E)], s);
    }

    [Fact]
    public void SoftmaxDimOutOfRange()
    {
        using var x = torch.Zeros([2, 3]);
        var e = Assert.Throws<TorchException>(() => x.Softmax(2));
        Assert.Contains("Dimension out of range (expected to be in range of [-2, 1], but got 2)", e.Message);
    }

    // ---- elementwise math ----
    [Fact]
    public void UnaryMath()
    {
        float[] p = [0.25f, 1f, 2f, 9f];
        using var x = torch.Tensor(p);
        using var exp = x.Exp();
        using var log = x.Log();
        using var sqrt = x.Sqrt();
        using var rsqrt = x.Rsqrt();
        using var sin = x.Sin();
        using var cos = x.Cos();
        using var sq = x.Square();
        using var rec = x.Reciprocal();
        AssertClose(p.Select(v => Math.Exp(v)).ToArray(), exp);
        AssertClose(p.Select(v => Math.Log(v)).ToArray(), log);
        AssertClose([0.5, 1, Math.Sqrt(2), 3], sqrt);
        AssertClose([2, 1, 1 / Math.Sqrt(2), 1 / 3.0], rsqrt);
        AssertClose(p.Select(v => Math.Sin(v)).ToArray(), sin);
        AssertClose(p.Select(v => Math.Cos(v)).ToArray(), cos);
        AssertClose([0.0625, 1, 4, 81], sq);
        AssertClose([4, 1, 0.5, 1 / 9.0], rec);
    }

    [Fact]
    public void AbsSignFloorRound()
    {
        using var x = torch.Tensor([-2.5f, -1.5f, -0.5f, 0f, 0.5f, 1.5f, 2.5f, 2.7f]);
        using var abs = x.Abs();
        using var sign = x.Sign();
        using var floor = x.Floor();
        using var round = x.Round();
        Assert.Equal([2.5f, 1.5f, 0.5f, 0f, 0.5f, 1.5f, 2.5f, 2.7f], abs.ToArray<float>());
        Assert.Equal([-1f, -1, -1, 0, 1, 1, 1, 1], sign.ToArray<float>());
        Assert.Equal([-3f, -2, -1, 0, 0, 1, 2, 2], floor.ToArray<float>());
        // torch.round rounds half to even.
        Assert.Equal([-2f, -2, -0f, 0, 0, 2, 2, 3], round.ToArray<float>());

        using var y = torch.Tensor([1.2345, -0.0151]);
        using var r2 = y.Round(2);
        AssertClose([1.23, -0.02], r2, 1e-12, 0);
    }

    [Fact]
    public void PowWithScalarAndTensorExponents()
    {
        using var x = torch.Tensor([2f, 3f, 4f]);
        using var e = torch.Tensor([3f, 2f, 0.5f]);
        using var p2 = x.Pow(2);
        using var ph = x.Pow(0.5);
        using var pt = x.Pow(e);
        using var ps = torch.Pow(2, e);
        Assert.Equal([4f, 9, 16], p2.ToArray<float>());
        AssertClose([Math.Sqrt(2), Math.Sqrt(3), 2], ph);
        AssertClose([8, 9, 2], pt);
        AssertClose([8, 4, Math.Sqrt(2)], ps);
    }

    [Fact]
    public void ClampWithOptionalBounds()
    {
        using var x = torch.Tensor([-2f, -0.5f, 0.5f, 2f]);
        using var both = x.Clamp(-1, 1);
        using var lower = x.Clamp(min: 0);
        using var upper = x.Clamp(max: 0);
        using var cmin = x.ClampMin(0);
        using var cmax = x.ClampMax(0);
        Assert.Equal([-1f, -0.5f, 0.5f, 1f], both.ToArray<float>());
        Assert.Equal([0f, 0, 0.5f, 2], lower.ToArray<float>());
        Assert.Equal([-2f, -0.5f, 0, 0], upper.ToArray<float>());
        Assert.Equal(lower.ToArray<float>(), cmin.ToArray<float>());
        Assert.Equal(upper.ToArray<float>(), cmax.ToArray<float>());

        using var lo = torch.Tensor([0f, -1f, 1f, 0f]);
        using var tensorBounds = x.Clamp(lo, null);
        Assert.Equal([0f, -0.5f, 1f, 2f], tensorBounds.ToArray<float>());
    }

    [Fact]
    public void LerpWithScalarAndTensorWeights()
    {
        using var a = torch.Tensor([0f, 10f, -4f]);
        using var b = torch.Tensor([10f, 20f, 4f]);
        using var w = torch.Tensor([0f, 1f, 0.75f]);
        using var s = a.Lerp(b, 0.25);
        using var t = a.Lerp(b, w);
        AssertClose([2.5, 12.5, -2], s);
        AssertClose([0, 20, 2], t);
    }

    [Fact]
    public void MaximumMinimumBroadcast()
    {
        using var a = torch.Tensor([1f, 5f, 3f], 3, 1);
        using var b = torch.Tensor([2f, 4f], 1, 2);
        using var mx = a.Maximum(b);
        using var mn = torch.Minimum(a, b);
        using var mx2 = a.Max(b);
        Assert.Equal([3L, 2], mx.Shape);
        Assert.Equal([2f, 4, 5, 5, 3, 4], mx.ToArray<float>());
        Assert.Equal([1f, 1, 2, 4, 2, 3], mn.ToArray<float>());
        Assert.Equal(mx.ToArray<float>(), mx2.ToArray<float>());
    }

    // ---- comparisons and logic ----
    [Fact]
    public void ComparisonsReturnBoolTensors()
    {
        using var a = torch.Tensor([1f, 2f, 3f]);
        using var b = torch.Tensor([3f, 2f, 1f]);
        using var eq = a.Eq(b);
        using var ne = a.Ne(b);
        using var gt = a.Gt(b);
        using var lt = a.Lt(b);
        using var ge = a.Ge(b);
        using var le = a.Le(b);
        Assert.Equal([false, true, false], Bools(eq));
        Assert.Equal([true, false, true], Bools(ne));
        Assert.Equal([false, false, true], Bools(gt));
        Assert.Equal([true, false, false], Bools(lt));
        Assert.Equal([false, true, true], Bools(ge));
        Assert.Equal([true, true, false], Bools(le));

        using var eqs = a.Eq(2);
        using var nes = a.Ne(2);
        using var gts = a.Gt(2);
        using var lts = a.Lt(2);
        using var ges = a.Ge(2);
        using var les = a.Le(2);
        Assert.Equal([false, true, false], Bools(eqs));
        Assert.Equal([true, false, true], Bools(nes));
        Assert.Equal([false, false, true], Bools(gts));
        Assert.Equal([true, false, false], Bools(lts));
        Assert.Equal([false, true, true], Bools(ges));
        Assert.Equal([true, true, false], Bools(les));
    }

    [Fact]
    public void ComparisonsBroadcastAndMixIntegerAndFloat()
    {
        using var a = torch.Tensor([0L, 1, 2], 3, 1);
        using var b = torch.Tensor([0.5f, 1.5f], 1, 2);
        using var gt = a.Gt(b);
        Assert.Equal([3L, 2], gt.Shape);
        Assert.Equal([false, false, true, false, true, true], Bools(gt));
    }

    [Fact]
    public void LogicalOpsAndFiniteness()
    {
        using var a = torch.Tensor([true, true, false, false]);
        using var b = torch.Tensor([true, false, true, false]);
        using var not = a.LogicalNot();
        using var and = a.LogicalAnd(b);
        using var or = a.LogicalOr(b);
        Assert.Equal([false, false, true, true], Bools(not));
        Assert.Equal([true, false, false, false], Bools(and));
        Assert.Equal([true, true, true, false], Bools(or));

        using var x = torch.Tensor([1f, float.PositiveInfinity, float.NaN, float.NegativeInfinity]);
        using var finite = x.IsFinite();
        using var nan = x.IsNan();
        Assert.Equal([true, false, false, false], Bools(finite));
        Assert.Equal([false, false, true, false], Bools(nan));
    }

    [Fact]
    public void MaskedFillBroadcastsTheMask()
    {
        using var x = torch.Tensor([1f, 2f, 3f, 4f], 2, 2);
        using var rowMask = torch.Tensor([true, false], 2, 1);
        using var filled = x.MaskedFill(rowMask, -1);
        Assert.Equal([-1f, -1, 3, 4], filled.ToArray<float>());
        Assert.Equal([1f, 2, 3, 4], x.ToArray<float>());

        using var value = torch.Scalar(7);
        using var filledT = x.MaskedFill(rowMask, value);
        Assert.Equal([7f, 7, 3, 4], filledT.ToArray<float>());
    }

    [Fact]
    public void MaskedFillInPlace()
    {
        using var x = torch.Tensor([1f, 2f, 3f, 4f]);
        using var mask = torch.Tensor([false, true, false, true]);
        var same = x.MaskedFill_(mask, float.NegativeInfinity);
        Assert.Same(x, same);
        Assert.Equal([1f, float.NegativeInfinity, 3, float.NegativeInfinity], x.ToArray<float>());

        using var shortMask = torch.Tensor([true, false, true]);
        var e = Assert.Throws<TorchException>(() => x.MaskedFill_(shortMask, 0));
        Assert.Contains("The size of tensor a (4) must match the size of tensor b (3)", e.Message);
    }

    [Fact]
    public void AllcloseUsesRelativeAndAbsoluteTolerance()
    {
        using var a = torch.Tensor([1f, 100f]);
        using var b = torch.Tensor([1.000001f, 100.0005f]);
        using var c = torch.Tensor([1.1f, 100f]);
        Assert.True(a.Allclose(b));
        Assert.False(a.Allclose(c));
        Assert.True(a.Allclose(c, rtol: 0.2));
        Assert.True(torch.Allclose(a, c, rtol: 0, atol: 0.11));

        using var n = torch.Tensor([float.NaN]);
        Assert.False(n.Allclose(n));
        Assert.True(n.Allclose(n, equalNan: true));
    }

    [Fact]
    public void WhereWithScalars()
    {
        using var c = torch.Tensor([true, false, true]);
        using var x = torch.Tensor([1f, 2f, 3f]);
        using var w1 = torch.Where(c, x, 0);
        using var w2 = torch.Where(c, -1, x);
        Assert.Equal([1f, 0, 3], w1.ToArray<float>());
        Assert.Equal([-1f, 2, -1], w2.ToArray<float>());
    }

    // ---- reductions ----
    private static Tensor M23() => torch.Tensor([1f, 2, 3, 4, 5, 6], 2, 3);

    [Fact]
    public void SumAndMeanWithDims()
    {
        using var x = M23();
        using var all = x.Sum();
        using var d0 = x.Sum(0);
        using var d1 = x.Sum(1, keepdim: true);
        using var both = x.Sum([0, 1]);
        using var keepAll = x.Sum(keepdim: true);
        Assert.Empty(all.Shape);
        Assert.Equal(21, all.Item());
        Assert.Equal([5f, 7, 9], d0.ToArray<float>());
        Assert.Equal([2L, 1], d1.Shape);
        Assert.Equal([6f, 15], d1.ToArray<float>());
        Assert.Equal(21, both.Item());
        Assert.Equal([1L, 1], keepAll.Shape);

        using var mean = x.Mean();
        using var mean1 = x.Mean(1);
        using var mean0 = x.Mean(0, keepdim: true);
        Assert.Equal(3.5, mean.Item());
        Assert.Equal([2f, 5], mean1.ToArray<float>());
        Assert.Equal([1L, 3], mean0.Shape);
        Assert.Equal([2.5f, 3.5f, 4.5f], mean0.ToArray<float>());
    }

    [Fact]
    public void ReductionDtypes()
    {
        using var ints = torch.Tensor([1, 2, 3]);
        using var s = ints.Sum();
        Assert.Equal(DType.Int64, s.DType); // integer sums widen to int64, as in PyTorch
        using var f = M23();
        using var d = f.Sum(dtype: DType.Float64);
        Assert.Equal(DType.Float64, d.DType);
        using var md = f.Mean(1, dtype: DType.Float64);
        Assert.Equal(DType.Float64, md.DType);

        var e = Assert.Throws<TorchException>(() => ints.Mean());
        Assert.Contains("Input dtype must be either a floating point or complex dtype", e.Message);
    }

    [Fact]
    public void VarAndStdWithCorrection()
    {
        using var x = torch.Tensor([1.0, 2, 3, 4]);
        // mean 2.5, squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5
        using var unbiased = x.Var();
        using var population = x.Var(correction: 0);
        using var populationFlag = x.Var(null, unbiased: false);
        using var std = x.Std();
        using var std0 = x.Std(null, unbiased: false);
        Assert.Equal(5 / 3.0, unbiased.Item(), 15);
        Assert.Equal(1.25, population.Item(), 15);
        Assert.Equal(1.25, populationFlag.Item(), 15);
        Assert.Equal(Math.Sqrt(5 / 3.0), std.Item(), 15);
        Assert.Equal(Math.Sqrt(1.25), std0.Item(), 15);

        using var m = torch.Tensor([1.0, 2, 3, 4, 6, 8], 2, 3);
        using var rows = m.Var(1);
        using var rowsKeep = m.Std(1, correction: 0, keepdim: true);
        AssertClose([1, 4], rows, Float64Tol, 0);
        Assert.Equal([2L, 1], rowsKeep.Shape);
        AssertClose([Math.Sqrt(2 / 3.0), Math.Sqrt(8 / 3.0)], rowsKeep, Float64Tol, 0);
        using var cols = m.Var([0]);
        AssertClose([4.5, 8, 12.5], cols, Float64Tol, 0);
    }

    [Fact]
    public void MaxMinWholeAndAlongADim()
    {
        using var x = torch.Tensor([3f, 9, 1, -4, 5, 7], 2, 3);
        using var max = x.Max();
        using var min = x.Min();
        Assert.Equal(9, max.Item());
        Assert.Equal(-4, min.Item());

        var (values, indices) = x.Max(1);
        using (values)
        using (indices)
        {
            Assert.Equal([9f, 7], values.ToArray<float>());
            Assert.Equal([1L, 2], indices.ToArray<long>());
        }
        var (minValues, minIndices) = x.Min(0, keepdim: true);
        using (minValues)
        using (minIndices)
        {
            Assert.Equal([1L, 3], minValues.Shape);
            Assert.Equal([-4f, 5, 1], minValues.ToArray<float>());
            Assert.Equal([1L, 1, 0], minIndices.ToArray<long>());
        }
    }

    [Fact]
    public void ArgmaxAmaxAmin()
    {
        using var x = torch.Tensor([3f, 9, 1, -4, 5, 9], 2, 3);
        using var flat = x.Argmax();
        Assert.Equal(1, flat.ItemInt64()); // the first of the tied maxima
        using var rows = x.Argmax(1);
        Assert.Equal([1L, 2], rows.ToArray<long>());
        using var cols = x.Argmin(0, keepdim: true);
        Assert.Equal([1L, 3], cols.Shape);
        Assert.Equal([1L, 1, 0], cols.ToArray<long>());

        using var amaxAll = x.Amax();
        using var amax1 = x.Amax(1);
        using var amin0 = x.Amin(0);
        Assert.Equal(9, amaxAll.Item());
        Assert.Equal([9f, 9], amax1.ToArray<float>());
        Assert.Equal([-4f, 5, 1], amin0.ToArray<float>());
    }

    [Fact]
    public void VectorNorm()
    {
        using var x = torch.Tensor([3f, 4, 6, -8], 2, 2);
        using var all = x.Norm();
        using var rows = x.Norm(2, 1);
        using var l1 = x.Norm(1);
        using var keep = x.Norm(2, [1], keepdim: true);
        AssertClose([Math.Sqrt(9 + 16 + 36 + 64)], all);
        AssertClose([5, 10], rows);
        AssertClose([21], l1);
        Assert.Equal([2L, 1], keep.Shape);
    }

    [Fact]
    public void AllAndAny()
    {
        using var b = torch.Tensor([true, true, true, false], 2, 2);
        using var all = b.All();
        using var any = b.Any();
        using var allRows = b.All(1);
        using var anyCols = b.Any(0, keepdim: true);
        Assert.Equal([false], Bools(all));
        Assert.Equal([true], Bools(any));
        Assert.Equal([true, false], Bools(allRows));
        Assert.Equal([1L, 2], anyCols.Shape);
        Assert.Equal([true, true], Bools(anyCols));
    }

    // ---- shape ----
    private static Tensor Arange24() => torch.Tensor(Enumerable.Range(0, 24).Select(i => (float)i).ToArray(), 2, 3, 4);

    [Fact]
    public void PermuteMovesElements()
    {
        using var x = Arange24();
        using var p = x.Permute(2, 0, 1);
        Assert.Equal([4L, 2, 3], p.Shape);
        Assert.False(p.IsContiguous);
        var v = p.ToArray<float>();
        for (var k = 0; k < 4; k++)
            for (var i = 0; i < 2; i++)
                for (var j = 0; j < 3; j++)
                    Assert.Equal(i * 12 + j * 4 + k, v[k * 6 + i * 3 + j]);

        var e = Assert.Throws<TorchException>(() => x.Permute(0, 1));
        Assert.Contains("number of dimensions in the tensor input does not match the length of the desired ordering", e.Message);
    }

    [Fact]
    public void TransposeAndT()
    {
        using var x = M23();
        using var t = x.T();
        using var tr = x.Transpose(0, 1);
        Assert.Equal([3L, 2], t.Shape);
        Assert.Equal([1f, 4, 2, 5, 3, 6], t.ToArray<float>());
        Assert.Equal(t.ToArray<float>(), tr.ToArray<float>());

        using var y = Arange24();
        using var last = y.Transpose(-1, -2);
        Assert.Equal([2L, 4, 3], last.Shape);
        var e = Assert.Throws<TorchException>(() => y.T());
        Assert.Contains("t() expects a tensor with <= 2 dimensions, but self is 3D", e.Message);
    }

    [Fact]
    public void FlattenUnflattenSqueezeUnsqueeze()
    {
        using var x = Arange24();
        using var f = x.Flatten();
        using var f1 = x.Flatten(1);
        using var f01 = x.Flatten(0, 1);
        Assert.Equal([24L], f.Shape);
        Assert.Equal([2L, 12], f1.Shape);
        Assert.Equal([6L, 4], f01.Shape);
        using var u = f1.Unflatten(1, 3, -1);
        Assert.Equal([2L, 3, 4], u.Shape);
        Assert.Equal(x.ToArray<float>(), u.ToArray<float>());

        using var a = x.Unsqueeze(0);
        using var b = x.Unsqueeze(-1);
        Assert.Equal([1L, 2, 3, 4], a.Shape);
        Assert.Equal([2L, 3, 4, 1], b.Shape);

        using var s = torch.Zeros([1, 2, 1, 3]);
        using var sAll = s.Squeeze();
        using var s0 = s.Squeeze(0);
        using var s1 = s.Squeeze(1);
        Assert.Equal([2L, 3], sAll.Shape);
        Assert.Equal([2L, 1, 3], s0.Shape);
        Assert.Equal([1L, 2, 1, 3], s1.Shape); // a dim of size 2 stays
    }

    [Fact]
    public void ExpandIsAViewAndRepeatCopies()
    {
        using var x = torch.Tensor([1f, 2f, 3f], 3, 1);
        using var e = x.Expand(3, 4);
        using var e2 = x.Expand(2, -1, 2);
        Assert.Equal([3L, 4], e.Shape);
        Assert.Equal([1L, 0], e.Strides); // no copy: the new dim steps 0 elements
        Assert.Equal([1f, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3], e.ToArray<float>());
        Assert.Equal([2L, 3, 2], e2.Shape);
        using var like = torch.Zeros([3, 5]);
        using var ea = x.ExpandAs(like);
        Assert.Equal([3L, 5], ea.Shape);

        var err = Assert.Throws<TorchException>(() => x.Expand(4, 4));
        Assert.Contains("The expanded size of the tensor (4) must match the existing size (3) at non-singleton dimension 0", err.Message);

        using var row = torch.Tensor([1f, 2f]);
        using var r = row.Repeat(2, 2);
        Assert.Equal([2L, 4], r.Shape);
        Assert.Equal([1f, 2, 1, 2, 1, 2, 1, 2], r.ToArray<float>());
    }

    [Fact]
    public void ChunkSplitNarrow()
    {
        using var x = torch.Arange(5, DType.Float32);
        var chunks = x.Chunk(3);
        Assert.Equal([[0f, 1], [2f, 3], [4f]], chunks.Select(c => c.ToArray<float>()).ToArray());
        // ceil(5/4) = 2 per chunk, so only three chunks come back.
        var fewer = x.Chunk(4);
        Assert.Equal(3, fewer.Length);
        var split = x.Split(2);
        Assert.Equal([[0f, 1], [2f, 3], [4f]], split.Select(c => c.ToArray<float>()).ToArray());
        var sizes = x.Split([1, 4]);
        Assert.Equal([[0f], [1f, 2, 3, 4]], sizes.Select(c => c.ToArray<float>()).ToArray());
        foreach (var t in chunks.Concat(fewer).Concat(split).Concat(sizes)) t.Dispose();

        using var m = M23();
        var cols = m.Chunk(3, dim: 1);
        Assert.Equal([2L, 1], cols[2].Shape);
        Assert.Equal([3f, 6], cols[2].ToArray<float>());
        foreach (var t in cols) t.Dispose();

        var e = Assert.Throws<TorchException>(() => x.Split([1, 2]));
        Assert.Contains("split_with_sizes expects split_sizes to sum exactly to 5", e.Message);

        using var n = x.Narrow(0, 1, 2);
        Assert.Equal([1f, 2], n.ToArray<float>());
        n.Fill_(-1); // a view: writing through it changes x
        Assert.Equal([0f, -1, -1, 3, 4], x.ToArray<float>());
        var e2 = Assert.Throws<TorchException>(() => x.Narrow(0, 4, 2));
        Assert.Contains("start (4) + length (2) exceeds dimension size (5)", e2.Message);
    }

    [Fact]
    public void IndexSelectGatherScatterAdd()
    {
        using var x = M23();
        using var idx = torch.Tensor([2L, 0L]);
        using var cols = x.IndexSelect(1, idx);
        Assert.Equal([3f, 1, 6, 4], cols.ToArray<float>());

        // torch.gather's documented example: out[i][j] = t[i][index[i][j]] for dim 1.
        using var t = torch.Tensor([1f, 2, 3, 4], 2, 2);
        using var gi = torch.Tensor([0L, 0, 1, 0], 2, 2);
        using var g = t.Gather(1, gi);
        Assert.Equal([1f, 1, 4, 3], g.ToArray<float>());
        using var g0 = t.Gather(0, gi);
        Assert.Equal([1f, 2, 3, 2], g0.ToArray<float>());

        using var bad = torch.Tensor([0L, 5, 1, 0], 2, 2);
        var e = Assert.Throws<TorchException>(() => t.Gather(1, bad));
        Assert.Contains("index 5 is out of bounds for dimension 1 with size 2", e.Message);

        using var zeros = torch.Zeros([3]);
        using var si = torch.Tensor([0L, 1, 0, 2]);
        using var src = torch.Tensor([1f, 2, 3, 4]);
        using var sa = zeros.ScatterAdd(0, si, src);
        Assert.Equal([4f, 2, 4], sa.ToArray<float>());
        Assert.Equal([0f, 0, 0], zeros.ToArray<float>());

        using var z2 = torch.Zeros([2, 3]);
        using var si2 = torch.Tensor([2L, 2, 0, 1], 2, 2);
        using var src2 = torch.Tensor([1f, 2, 3, 4], 2, 2);
        using var sa2 = z2.ScatterAdd(1, si2, src2);
        Assert.Equal([0f, 0, 3, 3, 4, 0], sa2.ToArray<float>());
    }

    // ---- random initialisation ----
    [Fact]
    public void UniformInPlaceDrawsWhatRandDraws()
    {
        // torch.rand(3, generator=torch.Generator().manual_seed(0)) = [0.4963, 0.7682, 0.0885]
        using var g = new Generator(0);
        using var x = torch.Empty([3]);
        Assert.Same(x, x.Uniform_(generator: g));
        AssertClose([0.4963, 0.7682, 0.0885], x, 0, 5e-5); // the reference is printed to 4 decimals

        g.ManualSeed(0);
        using var r = torch.Rand([3], g);
        Assert.Equal(r.ToArray<float>(), x.ToArray<float>());

        g.ManualSeed(0);
        using var y = torch.Empty([1000]).Uniform_(-3, -2, g);
        using var ymin = y.Min();
        using var ymax = y.Max();
        Assert.True(ymin.Item() >= -3 && ymax.Item() < -2);
        Assert.Equal(-3 + 0.4963, y.ToArray<float>()[0], 3);
    }

    [Fact]
    public void NormalInPlaceDrawsWhatRandnDraws()
    {
        // torch.randn(3, generator=torch.Generator().manual_seed(0)) = [1.5410, -0.2934, -2.1788]
        using var g = new Generator(0);
        using var x = torch.Empty([3]).Normal_(2, 3, g);
        AssertClose([2 + 3 * 1.5410, 2 - 3 * 0.2934, 2 - 3 * 2.1788], x, 0, 3 * 5e-5);

        g.ManualSeed(0);
        using var a = torch.Empty([40]).Normal_(generator: g);
        g.ManualSeed(0);
        using var b = torch.Randn([40], g);
        Assert.Equal(b.ToArray<float>(), a.ToArray<float>());
    }
}
