namespace SdAppliance.Formats.Checkpoints;

/// <summary>
/// The EMA copy an original-layout checkpoint may carry (CompVis' <c>LitEma</c>, kept by the LDM trainer and by
/// DreamBooth and fine-tune scripts built on it): the shadow of each parameter of <c>model.*</c> (the UNet's
/// <c>DiffusionWrapper</c>) is stored as <c>model_ema.</c> followed by the parameter's name relative to
/// <c>model.</c> with its dots removed, so <c>model.diffusion_model.input_blocks.0.0.weight</c> has the shadow
/// <c>model_ema.diffusion_modelinput_blocks00weight</c>; LitEma's own buffers are <c>model_ema.decay</c> and
/// <c>model_ema.num_updates</c>. Names only: which bytes to take is the caller's.
/// </summary>
public static class LdmEma
{
    /// <summary>What every EMA key starts with.</summary>
    public const string Prefix = "model_ema.";

    /// <summary>The prefix of the weights LitEma shadows (the UNet wrapper's parameters).</summary>
    public const string ModelPrefix = "model.";

    /// <summary>LitEma's bookkeeping buffers, which shadow nothing.</summary>
    public static readonly IReadOnlySet<string> Buffers = new HashSet<string>(StringComparer.Ordinal) { Prefix + "decay", Prefix + "num_updates" };

    public static bool IsEmaKey(string key) => key.StartsWith(Prefix, StringComparison.Ordinal);

    /// <summary>The EMA key that shadows <paramref name="modelKey"/> (a <c>model.*</c> key), or null for any other key.</summary>
    public static string? ShadowOf(string modelKey) =>
        modelKey.StartsWith(ModelPrefix, StringComparison.Ordinal) ? Prefix + modelKey[ModelPrefix.Length..].Replace(".", "", StringComparison.Ordinal) : null;

    /// <summary>Whether <paramref name="keys"/> hold EMA weights (not only LitEma's buffers).</summary>
    public static bool HasEmaWeights(IEnumerable<string> keys) => keys.Any(k => IsEmaKey(k) && !Buffers.Contains(k));
}
