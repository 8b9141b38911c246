using SdAppliance.Torch;

namespace SdAppliance.Diffusion.Pipelines;

/// <summary>
/// The guidance scale as a UNet input, for models distilled with guidance built in (LCM: a UNet with
/// <c>time_cond_proj_dim</c>). diffusers' <c>get_guidance_scale_embedding(w − 1)</c>: the VDM sinusoid of
/// (w − 1)·1000 at frequencies exp(−ln(10000)·i / (half − 1)), sin then cos, zero-padded to an odd width. Such a
/// model takes the guidance this way instead of an unconditional batch.
/// </summary>
public static class GuidanceEmbedding
{
    /// <summary>[<paramref name="batch"/>, <paramref name="embeddingDim"/>] float32 for CFG scale <paramref name="cfgScale"/>.</summary>
    public static Tensor Compute(double cfgScale, int batch, int embeddingDim, Device? device = null)
    {
        if (embeddingDim < 4) throw new ArgumentOutOfRangeException(nameof(embeddingDim), embeddingDim, "time_cond_proj_dim must be at least 4");
        using var scope = torch.NewDisposeScope();
        var half = embeddingDim / 2;
        // The float32 operations of diffusers in its order: torch.tensor(w − 1) is float32 before the ×1000.
        var step = MathF.Log(10000f) / (half - 1);
        var frequencies = torch.Arange(0, half, dtype: DType.Float32, device: device).Mul(-step).Exp();
        var w = torch.Full([batch], (float)(cfgScale - 1), DType.Float32, device).Mul(1000.0);
        var angles = w.Unsqueeze(1) * frequencies.Unsqueeze(0);
        var emb = torch.Cat([angles.Sin(), angles.Cos()], 1);
        if (embeddingDim % 2 == 1) emb = Functional.Pad(emb, [0, 1, 0, 0]);
        return scope.MoveToOuterScope(emb);
    }
}
