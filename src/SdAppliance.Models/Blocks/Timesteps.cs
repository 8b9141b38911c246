using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Blocks;


/// <summary>
/// Sinusoidal timestep features, as diffusers' <c>Timesteps</c> (<c>get_timestep_embedding</c>):
/// frequencies exp(−ln(max_period)·i / (half − shift)) for i &lt; half, sin then cos of t·freq
/// (cos first with <see cref="FlipSinToCos"/>), zero-padded to an odd width. No parameters; always
/// float32 out, as in diffusers (the caller casts).
/// </summary>
public sealed class Timesteps(long numChannels, bool flipSinToCos, double downscaleFreqShift, double scale = 1, double maxPeriod = 10000)
    : Module<Tensor, Tensor>
{
    public long NumChannels { get; } = numChannels;
    public bool FlipSinToCos { get; } = flipSinToCos;
    public double DownscaleFreqShift { get; } = downscaleFreqShift;
    public double Scale { get; } = scale;
    public double MaxPeriod { get; } = maxPeriod;

    /// <summary>Timesteps [N] (any numeric dtype, fractional allowed) → [N, NumChannels] float32.</summary>
    public override Tensor Forward(Tensor timesteps)
    {
        if (timesteps.Dim != 1) throw new ArgumentException($"timesteps must be a 1-D tensor, got {timesteps.Dim}-D", nameof(timesteps));
        using var scope = torch.NewDisposeScope();
        var half = NumChannels / 2;
        // The same float32 operations in the same order as diffusers, so the features agree to the bit.
        var exponent = torch.Arange(0, half, dtype: DType.Float32, device: timesteps.Device).Mul(-Math.Log(MaxPeriod));
        exponent = exponent.Div(half - DownscaleFreqShift);
        var emb = timesteps.Float().Unsqueeze(1) * exponent.Exp().Unsqueeze(0);
        emb = emb.Mul(Scale);
        emb = FlipSinToCos ? torch.Cat([emb.Cos(), emb.Sin()], -1) : torch.Cat([emb.Sin(), emb.Cos()], -1);
        if (NumChannels % 2 == 1) emb = Functional.Pad(emb, [0, 1, 0, 0]);
        return scope.MoveToOuterScope(emb);
    }

    protected override string ExtraRepr() => $"num_channels={NumChannels}, flip_sin_to_cos={FlipSinToCos}, downscale_freq_shift={DownscaleFreqShift:R}";
}
