namespace SdAppliance.Diffusion.Pipelines;

/// <summary>An image size in SDXL's micro-conditioning, in diffusers' order: (height, width).</summary>
public readonly record struct ConditioningSize(int Height, int Width);

/// <summary>SDXL's <c>crops_coords_top_left</c>, in diffusers' order: (top, left).</summary>
public readonly record struct CropTopLeft(int Top, int Left);

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
}
