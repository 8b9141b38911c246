using System.Globalization;

namespace SdAppliance.Diffusion.Pipelines;

/// <summary>An image size in SDXL's micro-conditioning, in diffusers' order: (height, width).</summary>
public readonly record struct ConditioningSize(int Height, int Width)
{
    /// <summary>The form <see cref="Parse"/> reads, for help texts.</summary>
    public const string Form = "HEIGHT,WIDTH";

    /// <summary><c>H,W</c> (diffusers' order, height first), e.g. <c>1024,768</c>.</summary>
    /// <param name="field">The field the text is for (<c>original_size</c>), named by a refusal.</param>
    /// <exception cref="GenerationRequestException">naming <paramref name="field"/> and the text when it is not two whole numbers.</exception>
    public static ConditioningSize Parse(string text, string field)
    {
        var (height, width) = MicroConditioning.ParsePair(text, field, Form, "1024,768");
        return new(height, width);
    }

    /// <summary>From a JSON request's <c>[h, w]</c>.</summary>
    /// <exception cref="GenerationRequestException">naming <paramref name="field"/> when it is not two numbers.</exception>
    public static ConditioningSize FromPair(IReadOnlyList<int> pair, string field)
    {
        var (height, width) = MicroConditioning.CheckPair(pair, field, "[height, width]");
        return new(height, width);
    }

    /// <summary>What <see cref="Parse"/> reads back.</summary>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Height},{Width}");

    /// <summary>A1111's spelling of a size in PNG info, as its <c>Size</c>: <c>WIDTHxHEIGHT</c>.</summary>
    public string ToInfotext() => string.Create(CultureInfo.InvariantCulture, $"{Width}x{Height}");
}

/// <summary>SDXL's <c>crops_coords_top_left</c>, in diffusers' order: (top, left).</summary>
public readonly record struct CropTopLeft(int Top, int Left)
{
    /// <summary>The form <see cref="Parse"/> reads, for help texts.</summary>
    public const string Form = "TOP,LEFT";

    /// <summary><c>T,L</c> (diffusers' order, top first), e.g. <c>64,32</c>.</summary>
    /// <exception cref="GenerationRequestException">naming <paramref name="field"/> and the text when it is not two whole numbers.</exception>
    public static CropTopLeft Parse(string text, string field)
    {
        var (top, left) = MicroConditioning.ParsePair(text, field, Form, "64,32");
        return new(top, left);
    }

    /// <summary>From a JSON request's <c>[top, left]</c>.</summary>
    public static CropTopLeft FromPair(IReadOnlyList<int> pair, string field)
    {
        var (top, left) = MicroConditioning.CheckPair(pair, field, "[top, left]");
        return new(top, left);
    }

    /// <summary>What <see cref="Parse"/> reads back.</summary>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Top},{Left}");
}

/// <summary>
/// The six numbers SDXL base's UNet reads beside the pooled text (<c>add_time_ids</c>): original size, crop's top-left
/// corner, target size. diffusers' defaults: the generated size, (0, 0), the generated size.
/// </summary>
public sealed record MicroConditioning(ConditioningSize OriginalSize, CropTopLeft CropsCoordsTopLeft, ConditioningSize TargetSize)
{
    public static MicroConditioning Default(int width, int height) => new(new(height, width), new(0, 0), new(height, width));

    /// <summary><c>[orig_h, orig_w, crop_top, crop_left, target_h, target_w]</c>, as <c>_get_add_time_ids</c> concatenates them.</summary>
    public float[] TimeIds() => [OriginalSize.Height, OriginalSize.Width, CropsCoordsTopLeft.Top, CropsCoordsTopLeft.Left, TargetSize.Height, TargetSize.Width];

    /// <summary>
    /// The SDXL refiner's five (<c>requires_aesthetics_score</c>): <c>[orig_h, orig_w, crop_top, crop_left, aesthetic_score]</c>,
    /// the target size left out.
    /// </summary>
    public float[] TimeIds(double aestheticScore) => [OriginalSize.Height, OriginalSize.Width, CropsCoordsTopLeft.Top, CropsCoordsTopLeft.Left, (float)aestheticScore];

    internal static (int First, int Second) ParsePair(string text, string field, string form, string example)
    {
        ArgumentNullException.ThrowIfNull(text);
        var parts = text.Split(',');
        if (parts.Length == 2
            && int.TryParse(parts[0].Trim(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var first)
            && int.TryParse(parts[1].Trim(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var second))
            return (first, second);
        throw new GenerationRequestException(field, $"'{text}': expected {form}, two whole numbers of pixels in diffusers' order (e.g. {example})");
    }

    internal static (int First, int Second) CheckPair(IReadOnlyList<int> pair, string field, string form)
    {
        ArgumentNullException.ThrowIfNull(pair);
        if (pair.Count == 2) return (pair[0], pair[1]);
        throw new GenerationRequestException(field, $"expected {form}, two whole numbers of pixels in diffusers' order, got {pair.Count} number{(pair.Count == 1 ? "" : "s")}");
    }
}

/// <summary>
/// The PNG info keys of SDXL micro-conditioning (A1111 writes none; these follow its style): sizes as its <c>Size</c>,
/// <c>WIDTHxHEIGHT</c>, so that <see cref="Imaging.A1111Parameters.ToDictionary"/> splits them into <c>-1</c> (width)
/// and <c>-2</c> (height) as it does A1111's sizes; the crop as two numbers, as A1111's settings "crop top coordinate"
/// and "crop left coordinate". Written only where they differ from what the pipeline would use without them.
/// </summary>
public static class MicroConditioningInfotext
{
    public const string OriginalSize = "Original size";
    public const string CropTop = "Crop top";
    public const string CropLeft = "Crop left";
    public const string TargetSize = "Target size";

    /// <summary>The key of the negative half's value: <c>Negative original size</c>.</summary>
    public static string Negative(string key) => "Negative " + char.ToLowerInvariant(key[0]) + key[1..];

    /// <summary>
    /// The settings for a request generated at <paramref name="width"/> × <paramref name="height"/>: the prompt's half where
    /// it differs from diffusers' defaults, the negative half where it differs from the prompt's half.
    /// </summary>
    public static IEnumerable<KeyValuePair<string, string>> Settings(GenerationRequest request, int width, int height)
    {
        ArgumentNullException.ThrowIfNull(request);
        var conditioning = request.Conditioning(width, height);
        return Differences(conditioning, MicroConditioning.Default(width, height))
            .Concat(Differences(request.NegativeConditioning(width, height), conditioning).Select(s => KeyValuePair.Create(Negative(s.Key), s.Value)));
    }

    private static IEnumerable<KeyValuePair<string, string>> Differences(MicroConditioning value, MicroConditioning baseline)
    {
        if (value.OriginalSize != baseline.OriginalSize) yield return new(OriginalSize, value.OriginalSize.ToInfotext());
        if (value.CropsCoordsTopLeft != baseline.CropsCoordsTopLeft)
        {
            yield return new(CropTop, value.CropsCoordsTopLeft.Top.ToString(CultureInfo.InvariantCulture));
            yield return new(CropLeft, value.CropsCoordsTopLeft.Left.ToString(CultureInfo.InvariantCulture));
        }
        if (value.TargetSize != baseline.TargetSize) yield return new(TargetSize, value.TargetSize.ToInfotext());
    }
}
