using SdAppliance.Appliance.Catalog;

namespace SdAppliance.Appliance.Generation;

/// <summary>A picture size to offer for a model: its label ("512 × 768 portrait"), width and height in pixels.</summary>
public sealed record SizePreset(int Width, int Height)
{
    public string Label => Width == Height ? $"{Width} × {Height} square"
        : $"{Width} × {Height} {(Width > Height ? "landscape" : "portrait")}";
}

/// <summary>
/// The sizes a model is made for, by its family (the catalog's <see cref="ModelEntry.Family"/>): SD 1.x around 512,
/// SD 2.x 768, SDXL its 1024 training buckets (about a megapixel each), the demo model 64. The first is the model's native
/// size (what a request without a size gets); every size is a multiple of 64, so of every VAE's 8.
/// </summary>
public static class SizePresets
{
    private static readonly IReadOnlyList<SizePreset> Demo = [new(64, 64), new(96, 64), new(64, 96), new(128, 128)];

    private static readonly IReadOnlyList<SizePreset> Sd1 = [new(512, 512), new(768, 512), new(512, 768), new(640, 512), new(512, 640), new(768, 768)];

    private static readonly IReadOnlyList<SizePreset> Sd2 = [new(768, 768), new(1024, 768), new(768, 1024), new(512, 512)];

    // SDXL's aspect-ratio buckets (its paper's, as A1111 and ComfyUI list them).
    private static readonly IReadOnlyList<SizePreset> Sdxl =
        [new(1024, 1024), new(1152, 896), new(896, 1152), new(1216, 832), new(832, 1216), new(1344, 768), new(768, 1344), new(1536, 640), new(640, 1536)];

    /// <summary>The presets for <paramref name="model"/>: by family, the demo model its own, an unknown family SD 1.x's.</summary>
    public static IReadOnlyList<SizePreset> For(ModelEntry model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return model.IsDemo ? Demo : ForFamily(model.Family);
    }

    /// <summary>The presets of a family as the catalog names it ("SD 1.x", "SD 2.x", "SDXL"); SD 1.x's for any other.</summary>
    public static IReadOnlyList<SizePreset> ForFamily(string? family) => family switch
    {
        ModelCatalog.SdxlFamily or ModelCatalog.SdxlRefinerFamily => Sdxl,
        "SD 2.x" => Sd2,
        _ => Sd1,
    };
}
