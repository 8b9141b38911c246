using System.Globalization;
using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Imaging;

namespace SdAppliance.Appliance.Generation;

/// <summary>A generation's PNG info read back into a request (what "send to the form" fills in), with what could not be read.</summary>
/// <param name="Problems">One line per setting whose value could not be used ("Steps: 'x' is not a whole number"); those keep the defaults.</param>
public sealed record ParsedInfotext(GenerationJobRequest Request, IReadOnlyList<string> Problems);

/// <summary>
/// The reverse of the pipeline's infotext (the <c>parameters</c> text every output carries, A1111's format, read by
/// <see cref="A1111Parameters.Parse"/>): the prompt (with its <c>&lt;lora:&gt;</c> tags), the negative prompt, Steps,
/// Sampler and Schedule type, CFG scale, Seed, Size, Model, VAE, Denoising strength, Clip skip and the Refiner with its switch, as A1111's "send to
/// txt2img" reads them. What the text leaves out keeps <see cref="GenerationJobRequest"/>'s defaults.
/// </summary>
public static class GenerationInfotext
{
    public static ParsedInfotext Parse(string infotext)
    {
        ArgumentNullException.ThrowIfNull(infotext);
        var parameters = A1111Parameters.Parse(infotext);
        var fields = parameters.ToDictionary();
        var problems = new List<string>();
        var request = new GenerationJobRequest { Prompt = parameters.Prompt, NegativePrompt = parameters.NegativePrompt };

        if (Int(fields, "Steps", problems) is { } steps) request = request with { Steps = steps };
        if (fields.GetValueOrDefault("Sampler") is { Length: > 0 } sampler) request = request with { Sampler = sampler };
        if (fields.GetValueOrDefault("Schedule type") is { Length: > 0 } schedule && !schedule.Equals("Automatic", StringComparison.OrdinalIgnoreCase))
            request = request with { Scheduler = schedule };
        if (Double(fields, "CFG scale", problems) is { } cfg) request = request with { CfgScale = cfg };
        if (Long(fields, "Seed", problems) is { } seed) request = request with { Seed = seed };
        if (Int(fields, "Size-1", problems) is { } width && Int(fields, "Size-2", problems) is { } height)
            request = request with { Width = width, Height = height };
        else if (fields.ContainsKey("Size") && !fields.ContainsKey("Size-1"))
            problems.Add($"Size: '{fields["Size"]}' is not WIDTHxHEIGHT");
        if (fields.GetValueOrDefault("Model") is { Length: > 0 } model) request = request with { Model = model };
        // "VAE: NAME" (the file name, A1111's sd_vae). Without it the request names none, as the one it came from did.
        if (fields.GetValueOrDefault("VAE") is { Length: > 0 } vae) request = request with { Vae = vae };
        if (Double(fields, "Denoising strength", problems) is { } strength) request = request with { Strength = strength };
        if (Int(fields, "Clip skip", problems) is { } clipSkip) request = request with { ClipSkip = clipSkip };
        // "Refiner: NAME [HASH]": the catalog knows the model by its name.
        if (fields.GetValueOrDefault("Refiner") is { Length: > 0 } refiner)
            request = request with { Refiner = System.Text.RegularExpressions.Regex.Replace(refiner, @" \[[0-9a-fA-F]+\]$", "") };
        if (Double(fields, "Refiner switch at", problems) is { } switchAt) request = request with { RefinerSwitchAt = switchAt };
        request = request with
        {
            OriginalSize = Size(fields, MicroConditioningInfotext.OriginalSize, problems),
            CropsCoordsTopLeft = Crop(fields, MicroConditioningInfotext.CropTop, MicroConditioningInfotext.CropLeft, problems),
            TargetSize = Size(fields, MicroConditioningInfotext.TargetSize, problems),
            NegativeOriginalSize = Size(fields, MicroConditioningInfotext.Negative(MicroConditioningInfotext.OriginalSize), problems),
            NegativeCropsCoordsTopLeft = Crop(fields, MicroConditioningInfotext.Negative(MicroConditioningInfotext.CropTop), MicroConditioningInfotext.Negative(MicroConditioningInfotext.CropLeft), problems),
            NegativeTargetSize = Size(fields, MicroConditioningInfotext.Negative(MicroConditioningInfotext.TargetSize), problems),
        };
        return new ParsedInfotext(request, problems);
    }

    // Written WIDTHxHEIGHT as A1111's sizes (split into -1 and -2), kept in diffusers' [height, width].
    private static int[]? Size(Dictionary<string, string> fields, string key, List<string> problems)
    {
        if (Int(fields, key + "-1", problems) is { } width && Int(fields, key + "-2", problems) is { } height) return [height, width];
        if (fields.TryGetValue(key, out var text)) problems.Add($"{key}: '{text}' is not WIDTHxHEIGHT");
        return null;
    }

    private static int[]? Crop(Dictionary<string, string> fields, string topKey, string leftKey, List<string> problems) =>
        Int(fields, topKey, problems) is { } top && Int(fields, leftKey, problems) is { } left ? [top, left] : null;

    private static int? Int(Dictionary<string, string> fields, string key, List<string> problems) =>
        Long(fields, key, problems) is { } value and >= int.MinValue and <= int.MaxValue ? (int)value : null;

    private static long? Long(Dictionary<string, string> fields, string key, List<string> problems)
    {
        if (!fields.TryGetValue(key, out var text)) return null;
        if (long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var value)) return value;
        problems.Add($"{key.Replace("-1", "", StringComparison.Ordinal).Replace("-2", "", StringComparison.Ordinal)}: '{text}' is not a whole number");
        return null;
    }

    private static double? Double(Dictionary<string, string> fields, string key, List<string> problems)
    {
        if (!fields.TryGetValue(key, out var text)) return null;
        if (double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) && double.IsFinite(value)) return value;
        problems.Add($"{key}: '{text}' is not a number");
        return null;
    }
}
