using SdAppliance.Formats;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using SdAppliance.Torch.Serialization;

namespace SdAppliance.Models.Tests;

/// <summary>The tiny fixture text encoder, its golden outputs, and comparison helpers.</summary>
internal static class TextEncoderFixtures
{
    /// <summary>
    /// The fixtures README's tolerance for the text encoder: outputs are O(1) float32 values that
    /// went through 3 layers whose summation order differs from PyTorch's (its own validation
    /// against openai CLIP differed by 9.5e-7), so 1e-5 is ten times the observed spread.
    /// </summary>
    public const double GoldenAtol = 1e-5;

    public static string Fixture(params string[] parts) => Path.Combine([AppContext.BaseDirectory, "Fixtures", .. parts]);

    public static ClipTextConfig TinyConfig() => ClipTextConfig.Load(Fixture("tiny-sd", "text_encoder", "config.json"));

    /// <summary>The tiny CLIP text encoder with the fixture weights (loaded strictly unless a projection is asked for, which the file lacks).</summary>
    public static ClipTextModel LoadTiny(bool withProjection = false)
    {
        var model = new ClipTextModel(TinyConfig(), withProjection);
        using var reader = TensorFile.Open(Fixture("tiny-sd", "text_encoder", "model.safetensors"));
        var weights = reader.ReadAll();
        try
        {
            var result = model.LoadStateDict(weights, strict: !withProjection);
            if (withProjection) Assert.Equal(["text_projection.weight"], result.MissingKeys);
        }
        finally
        {
            foreach (var t in weights.Values) t.Dispose();
        }
        return model.Eval();
    }

    /// <summary>A golden tensor, copied out of the mapped file.</summary>
    public static Tensor Golden(string name)
    {
        using var reader = TensorFile.Open(Fixture("text_encoder_golden.safetensors"));
        using var mapped = reader.ReadTensor(name);
        return mapped.Clone();
    }

    public static int[] IdsRow(Tensor ids, int row)
    {
        using var r = ids.Narrow(0, row, 1);
        using var l = r.Contiguous();
        return [.. l.ToArray<long>().Select(x => (int)x)];
    }

    public static double[] Values(Tensor t)
    {
        using var c = t.Contiguous();
        using var d = c.To(DType.Float64);
        return d.ToArray<double>();
    }

    /// <summary>Same shape and every |expected − actual| ≤ atol, with the worst element in the message.</summary>
    public static void AssertClose(Tensor expected, Tensor actual, double atol, string what)
    {
        Assert.Equal(expected.Shape, actual.Shape);
        AssertClose(Values(expected), actual, atol, what);
    }

    public static void AssertClose(IReadOnlyList<double> expected, Tensor actual, double atol, string what)
    {
        var a = Values(actual);
        Assert.Equal(expected.Count, a.Length);
        var (worst, at) = (0.0, -1);
        for (var i = 0; i < a.Length; i++)
        {
            var d = Math.Abs(expected[i] - a[i]);
            if (!(d <= worst)) (worst, at) = (d, i);
        }
        Assert.True(worst <= atol, $"{what}: element {at} differs by {worst:E2} (expected {(at >= 0 ? expected[at] : 0):R}, got {(at >= 0 ? a[at] : 0):R}); tolerance {atol:E1}");
    }

    /// <summary>
    /// A1111's emphasis in double precision on one chunk [L, C] (row-major): scale token t by
    /// weights[t], then multiply everything by mean(before) / mean(after).
    /// </summary>
    public static double[] EmphasisReference(double[] chunk, float[] weights)
    {
        var channels = chunk.Length / weights.Length;
        var scaled = new double[chunk.Length];
        for (var i = 0; i < chunk.Length; i++) scaled[i] = chunk[i] * weights[i / channels];
        var ratio = chunk.Average() / scaled.Average();
        return [.. scaled.Select(v => v * ratio)];
    }
}
