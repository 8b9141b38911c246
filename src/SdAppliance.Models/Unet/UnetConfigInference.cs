using System.Globalization;
using SdAppliance.Formats;

namespace SdAppliance.Models.Unet;

/// <summary>
/// A single file carries no config, so its family's standard one is the template; but distilled UNets of a family
/// (SSD-1B, Segmind Vega: SDXL with fewer transformer blocks per attention, an up path of its own, a mid block of one
/// resnet) keep its names and widths and differ in how many blocks each attention has. Those counts, and the mid block's kind,
/// are read here from the UNet's tensor names (diffusers naming, as <see cref="Formats.Checkpoints.LdmKeyMap"/>
/// maps a single file), so such a file loads and converts as itself instead of as the base model.
/// </summary>
public static class UnetConfigInference
{
    /// <summary>
    /// <paramref name="standard"/> with <c>layers_per_block</c>, <c>transformer_layers_per_block</c>,
    /// <c>reverse_transformer_layers_per_block</c> and <c>mid_block_type</c> as <paramref name="unetNames"/> show them;
    /// <paramref name="standard"/> itself when they build the same modules.
    /// </summary>
    /// <param name="source">The file, for the error message.</param>
    /// <exception cref="UserInputException">The depths cannot be written as a diffusers config (a mid-block depth other than the last down block's first).</exception>
    public static UNet2DConditionConfig FitDepths(UNet2DConditionConfig standard, IReadOnlyCollection<string> unetNames, string source)
    {
        ArgumentNullException.ThrowIfNull(standard);
        ArgumentNullException.ThrowIfNull(unetNames);
        var blocks = standard.NumBlocks;
        var layers = Count(unetNames, "down_blocks.0.resnets.");
        if (layers == 0) return standard;

        var down = new List<int[]>();
        for (var i = 0; i < blocks; i++)
            down.Add(AttentionDepths(unetNames, $"down_blocks.{I(i)}", layers) ?? [1]);
        var up = new List<int[]?>();
        for (var i = 0; i < blocks; i++)
            up.Add(AttentionDepths(unetNames, $"up_blocks.{I(i)}", layers + 1));

        string? midBlockType = null;
        if (Count(unetNames, "mid_block.attentions.0.transformer_blocks.") is var midDepth and > 0)
        {
            midBlockType = "UNetMidBlock2DCrossAttn";
            // diffusers gives the mid block the last down block's value: a free one when that block has no attention.
            if (!HasAttention(unetNames, $"down_blocks.{I(blocks - 1)}"))
                down[^1] = [midDepth];
            else if (down[^1][0] != midDepth)
                throw new UserInputException(source,
                    $"its mid block has {midDepth} transformer blocks and its last down block's first attention {down[^1][0]}; a diffusers UNet config gives both one number (transformer_layers_per_block's last)",
                    "convert it with config_directory, a diffusers folder holding a config that describes it");
        }
        else if (unetNames.Any(n => n.StartsWith("mid_block.resnets.0.", StringComparison.Ordinal)))
        {
            midBlockType = "UNetMidBlock2D";
        }

        var perBlock = down.Select(Compact).ToList();
        // An up block without attention takes the mirrored down value, so a symmetric UNet needs no reverse list.
        var reverse = up.Select((depths, i) => depths is null ? perBlock[blocks - 1 - i] : Compact(depths)).ToList();
        var symmetric = perBlock.All(d => d.Count == 1) && reverse.Select((d, i) => d.SequenceEqual(perBlock[blocks - 1 - i])).All(same => same);
        var fitted = standard with
        {
            LayersPerBlock = [layers],
            TransformerLayersPerBlock = perBlock,
            ReverseTransformerLayersPerBlock = symmetric ? null : reverse,
            MidBlockType = midBlockType,
        };
        return SameModules(fitted, standard) ? standard : fitted;
    }

    private static bool SameModules(UNet2DConditionConfig a, UNet2DConditionConfig b) =>
        a.MidBlockType == b.MidBlockType && a.LayersPerBlockList.SequenceEqual(b.LayersPerBlockList)
        && Same(a.DownTransformerDepths, b.DownTransformerDepths) && Same(a.UpTransformerDepths, b.UpTransformerDepths)
        && (a.MidBlockType != "UNetMidBlock2DCrossAttn" || a.MidTransformerDepth == b.MidTransformerDepth);

    private static bool Same(int[][] a, int[][] b) => a.Length == b.Length && a.Zip(b).All(p => p.First.SequenceEqual(p.Second));

    // One number for a block whose attentions are alike, as diffusers' configs write it.
    private static IReadOnlyList<int> Compact(int[] depths) => depths.Distinct().Count() == 1 ? [depths[0]] : depths;

    private static bool HasAttention(IReadOnlyCollection<string> names, string block) =>
        names.Any(n => n.StartsWith(block + ".attentions.", StringComparison.Ordinal));

    // The transformer blocks of each of the block's attentions, or null for a block without attention.
    private static int[]? AttentionDepths(IReadOnlyCollection<string> names, string block, int attentions) =>
        HasAttention(names, block)
            ? [.. Enumerable.Range(0, attentions).Select(j => Count(names, $"{block}.attentions.{I(j)}.transformer_blocks."))]
            : null;

    // How many numbered children (prefix + "N.") the names hold.
    private static int Count(IReadOnlyCollection<string> names, string prefix) =>
        names.Where(n => n.StartsWith(prefix, StringComparison.Ordinal))
            .Select(n => n[prefix.Length..].Split('.')[0]).Distinct().Count();

    private static string I(int n) => n.ToString(CultureInfo.InvariantCulture);
}
