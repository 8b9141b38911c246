using System.Globalization;
using System.Text.RegularExpressions;

namespace SdAppliance.Training.Networks;

/// <summary>
/// kohya's block-wise LoRA (<c>networks/lora.py</c>): the UNet's blocks as its original layout counts them, and the
/// per-block learning-rate weights and ranks. SD 1.x/2.x have 25 blocks: IN00–IN11 (index 0–11; IN00 is conv_in, which
/// has no LoRA), MID (12), OUT00–OUT11 (13–24). SDXL has 23: 0 (time and label embeddings, no LoRA), IN00–IN08
/// (1–9), MID00–MID02 (10–12), OUT00–OUT08 (13–21), 22 (the output convolution, no LoRA). <c>down_lr_weight</c> and
/// <c>up_lr_weight</c> give 12 (SDXL 9) weights, a comma list or a preset, <c>mid_lr_weight</c> 1 (SDXL 3).
/// </summary>
public static partial class LoraBlocks
{
    /// <summary>kohya's preset curves for down_lr_weight/up_lr_weight, each with an optional "+base" added to every weight.</summary>
    public static readonly IReadOnlyList<string> Presets = ["cosine", "sine", "linear", "reverse_linear", "zeros"];

    /// <summary>Blocks in the UNet: 25 (SD 1.x/2.x), 23 (SDXL).</summary>
    public static int Count(bool isSdxl) => isSdxl ? 23 : 25;

    /// <summary>Weights given by down_lr_weight/up_lr_weight: 12 (SD 1.x/2.x), 9 (SDXL).</summary>
    public static int DownOrUpCount(bool isSdxl) => isSdxl ? 9 : 12;

    /// <summary>Weights given by mid_lr_weight: 1 (SD 1.x/2.x), 3 (SDXL).</summary>
    public static int MidCount(bool isSdxl) => isSdxl ? 3 : 1;

    [GeneratedRegex(@"(up|down)_blocks_(\d+)_(resnets|upsamplers|downsamplers|attentions)_(\d+)_")]
    private static partial Regex UpDown();

    /// <summary>
    /// kohya's <c>get_block_index</c>: the block of a UNet module by its kohya name, or -1 (a text-encoder module, or a
    /// name outside the blocks). SD 1.x/2.x: down_blocks_i's resnets/attentions j are IN(1 + 3i + j), its downsampler
    /// IN(3 + 3i); up_blocks the same from OUT00 (13); mid_block 12. SDXL: input_blocks_N is 1 + N, middle_block_N
    /// 10 + N, output_blocks_N 13 + N.
    /// </summary>
    public static int Index(string loraName, bool isSdxl)
    {
        if (!isSdxl)
        {
            var m = UpDown().Match(loraName);
            if (m.Success)
            {
                var i = int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture);
                var j = int.Parse(m.Groups[4].Value, CultureInfo.InvariantCulture);
                var idx = m.Groups[3].Value is "upsamplers" or "downsamplers" ? 3 * i + 2 : 3 * i + j;
                return m.Groups[1].Value == "down" ? 1 + idx : 13 + idx;
            }
            return loraName.Contains("mid_block_", StringComparison.Ordinal) ? 12 : -1;
        }
        const string unet = "lora_unet_";
        if (!loraName.StartsWith(unet, StringComparison.Ordinal)) return -1;
        var name = loraName[unet.Length..];
        int Number() => int.Parse(name.Split('_')[2], CultureInfo.InvariantCulture);
        if (name.StartsWith("time_embed_", StringComparison.Ordinal) || name.StartsWith("label_emb_", StringComparison.Ordinal)) return 0;
        if (name.StartsWith("input_blocks_", StringComparison.Ordinal)) return 1 + Number();
        if (name.StartsWith("middle_block_", StringComparison.Ordinal)) return 10 + Number();
        if (name.StartsWith("output_blocks_", StringComparison.Ordinal)) return 13 + Number();
        return name.StartsWith("out_", StringComparison.Ordinal) ? 22 : -1;
    }

    /// <summary>
    /// kohya's <c>get_block_lr_weight</c>: the learning-rate weight of each block (<see cref="Count"/> of them), or null
    /// when none of the three is given. A list shorter than its count is filled with 1 and a longer one cut; a weight
    /// not above <paramref name="zeroThreshold"/> becomes 0 (such blocks get no modules at all); a part left out is
    /// all 1; SDXL's embedding and output blocks are 1.
    /// </summary>
    /// <exception cref="TrainingConfigException">A value that is not a number or a preset, naming the field.</exception>
    public static double[]? LrWeights(bool isSdxl, string? down, string? mid, string? up, double zeroThreshold)
    {
        if (down is null && mid is null && up is null) return null;
        var length = DownOrUpCount(isSdxl);
        double[] Part(string? text, string field, int count, bool presets)
        {
            if (text is null) return Enumerable.Repeat(1.0, count).ToArray();
            var values = presets && !text.Contains(',') ? Preset(text, field, count) : Numbers(text, field, emptyIsZero: true);
            var fitted = values.Take(count).Concat(Enumerable.Repeat(1.0, Math.Max(0, count - values.Length)));
            return [.. fitted.Select(w => w > zeroThreshold ? w : 0)];
        }
        double[] weights = [.. Part(down, "down_lr_weight", length, true), .. Part(mid, "mid_lr_weight", MidCount(isSdxl), false), .. Part(up, "up_lr_weight", length, true)];
        return isSdxl ? [1.0, .. weights, 1.0] : weights;
    }

    // kohya's curves over the n blocks, shallow to deep (i from 0 to n − 1), plus the "+base" after the name.
    private static double[] Preset(string text, string field, int n)
    {
        var tokens = text.Split('+');
        var name = tokens[0].Trim();
        var offset = 0.0;
        if (tokens.Length > 2 || (tokens.Length == 2 && !double.TryParse(tokens[1], NumberStyles.Float, CultureInfo.InvariantCulture, out offset)))
            throw new TrainingConfigException($"{field}: '{text}' is not a preset with a number added (for example sine+0.5)");
        IEnumerable<double> curve = name switch
        {
            "cosine" => Enumerable.Range(0, n).Reverse().Select(i => Math.Sin(Math.PI * i / (n - 1) / 2)),
            "sine" => Enumerable.Range(0, n).Select(i => Math.Sin(Math.PI * i / (n - 1) / 2)),
            "linear" => Enumerable.Range(0, n).Select(i => (double)i / (n - 1)),
            "reverse_linear" => Enumerable.Range(0, n).Reverse().Select(i => (double)i / (n - 1)),
            "zeros" => Enumerable.Repeat(0.0, n),
            _ => throw new TrainingConfigException($"{field}: '{text}' is neither a comma-separated list of weights nor one of the presets {string.Join(", ", Presets)} (each may add a number: sine+0.5)"),
        };
        return [.. curve.Select(w => w + offset)];
    }

    /// <summary>A comma-separated list of numbers as kohya takes it (an empty item is 0 when <paramref name="emptyIsZero"/>).</summary>
    public static double[] Numbers(string text, string field, bool emptyIsZero = false)
    {
        var items = text.Split(',');
        var values = new double[items.Length];
        for (var i = 0; i < items.Length; i++)
        {
            var item = items[i].Trim();
            if (item.Length == 0 && emptyIsZero) continue;
            if (!double.TryParse(item, NumberStyles.Float, CultureInfo.InvariantCulture, out values[i]) || !double.IsFinite(values[i]) || values[i] < 0)
                throw new TrainingConfigException($"{field}: item {i + 1}, '{item}', is not a number ≥ 0 (give comma-separated numbers, for example 1,1,0.5)");
        }
        return values;
    }

    /// <summary>
    /// A per-block list (block_dims, block_alphas, conv_block_dims, conv_block_alphas): exactly <see cref="Count"/> numbers,
    /// whole ones for the dims; the message names the field and the count the model needs.
    /// </summary>
    public static double[] PerBlock(string text, string field, bool isSdxl, bool whole)
    {
        var values = Numbers(text, field);
        var count = Count(isSdxl);
        if (values.Length != count)
            throw new TrainingConfigException($"{field}: {values.Length} values given; {(isSdxl ? "an SDXL" : "an SD 1.x/2.x")} UNet has {count} blocks "
                + (isSdxl ? "(0, IN00-IN08, MID00-MID02, OUT00-OUT08, 22)" : "(IN00-IN11, MID, OUT00-OUT11)") + ", so give one number for each");
        if (whole && values.Any(v => v != Math.Floor(v)))
            throw new TrainingConfigException($"{field}: ranks are whole numbers, got {text}");
        return values;
    }
}
