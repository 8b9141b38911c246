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
        var half = NumChannels / 2;
        // The same float32 operations in the same order as diffusers, so the features agree to the bit.
        using var index = torch.Arange(0, half, dtype: DType.Float32, device: timesteps.Device);
        using var scaledIndex = index.Mul(-Math.Log(MaxPeriod));
        using var exponent = scaledIndex.Div(half - DownscaleFreqShift);
        using var frequencies = exponent.Exp();
        using var t = timesteps.Float();
        using var column = t.Unsqueeze(1);
        using var row = frequencies.Unsqueeze(0);
        using var angles = column * row;
        using var scaled = angles.Mul(Scale);
        using var sin = scaled.Sin();
        using var cos = scaled.Cos();
        var features = FlipSinToCos ? torch.Cat([cos, sin], -1) : torch.Cat([sin, cos], -1);
        if (NumChannels % 2 == 0) return features;
        using (features) return Functional.Pad(features, [0, 1, 0, 0]);
    }

    protected override string ExtraRepr() => $"num_channels={NumChannels}, flip_sin_to_cos={FlipSinToCos}, downscale_freq_shift={DownscaleFreqShift:R}";
}
