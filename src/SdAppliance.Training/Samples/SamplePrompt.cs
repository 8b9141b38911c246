using System.Globalization;
using System.Text.Json;
using SdAppliance.Diffusion.Pipelines;
using Tomlyn;
using Tomlyn.Model;

namespace SdAppliance.Training.Samples;

/// <summary>
/// One sample image a run draws, as kohya's sample prompt files describe it; what a prompt leaves out comes from the
/// run's sample_* settings (<see cref="Request"/>).
/// </summary>
public sealed record SamplePrompt(string Prompt)
{
    public string? NegativePrompt { get; init; }
    public int? Width { get; init; }
    public int? Height { get; init; }
    public long? Seed { get; init; }
    public double? CfgScale { get; init; }
    public int? Steps { get; init; }
    public string? Sampler { get; init; }

    /// <summary>The generation of prompt <paramref name="index"/> of the run: its own values, else the run's (seed: sample_seed + index).</summary>
    public GenerationRequest Request(TrainingConfig config, int index) => new()
    {
        Prompt = Prompt, NegativePrompt = NegativePrompt ?? "", Seed = Seed ?? config.SampleSeed + index, Steps = Steps ?? config.SampleSteps,
        Sampler = Sampler ?? config.SampleSampler, CfgScale = CfgScale ?? new GenerationRequest().CfgScale,
        Width = Width ?? config.Resolution, Height = Height ?? config.Resolution,
    };

    /// <summary>
    /// The prompts a run samples: sample_prompts_file's, else sample_prompts (each line in the file's syntax), else the
    /// instance prompt or <paramref name="firstCaption"/>. The file is read now, so that a mistake in it stops the run before it trains.
    /// </summary>
    public static IReadOnlyList<SamplePrompt> Of(TrainingConfig config, string? firstCaption)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (config.SamplePromptsFile is { } file) return Load(file, config);
        if (config.SamplePrompts.Count > 0)
            return [.. config.SamplePrompts.Select((line, i) => ParseLine(line, $"sample_prompts[{i}]"))];
        return config.InstancePrompt is { } prompt ? [new(prompt)] : firstCaption is null ? [] : [new(firstCaption)];
    }

    /// <summary>kohya's sample prompt file: .txt lines (# starts a comment), .toml ([prompt] with [[prompt.subset]]) or .json (a list).</summary>
    public static IReadOnlyList<SamplePrompt> Load(string path, TrainingConfig config)
    {
        const string Field = "sample_prompts_file";
        if (!File.Exists(path)) throw new TrainingConfigException($"{Field}: '{path}' does not exist; give a .txt, .toml or .json file of prompts");
        var text = File.ReadAllText(path);
        var extension = Path.GetExtension(path).ToLowerInvariant();
        List<SamplePrompt> prompts = extension switch
        {
            ".txt" => [.. text.Split('\n').Select((line, i) => (Line: line.Trim(), Number: i + 1))
                .Where(l => l.Line.Length > 0 && !l.Line.StartsWith('#'))
                .Select(l => ParseLine(l.Line, $"{Field}: '{path}' line {l.Number}"))],
            ".toml" => FromToml(text, $"{Field}: '{path}'"),
            ".json" => FromJson(text, $"{Field}: '{path}'"),
            _ => throw new TrainingConfigException($"{Field}: '{path}' is not a .txt, .toml or .json file; kohya's sample prompt files are one of those"),
        };
        if (prompts.Count == 0) throw new TrainingConfigException($"{Field}: '{path}' holds no prompt");
        for (var i = 0; i < prompts.Count; i++)
        {
            try
            {
                prompts[i].Request(config, i).Validate();
            }
            catch (GenerationRequestException e)
            {
                throw new TrainingConfigException($"{Field}: '{path}' prompt {i + 1}: {e.Message}");
            }
        }
        return prompts;
    }

    /// <summary>
    /// A line in kohya's syntax: the prompt, then options after " --": n negative prompt, w width, h height, d seed,
    /// l CFG scale, s steps (1-1000), ss sampler.
    /// </summary>
    public static SamplePrompt ParseLine(string line, string where)
    {
        ArgumentNullException.ThrowIfNull(line);
        var parts = line.Split(" --");
        var prompt = new SamplePrompt(parts[0].Trim());
        foreach (var part in parts.Skip(1))
        {
            var space = part.IndexOf(' ');
            var (option, value) = space < 0 ? (part.Trim(), "") : (part[..space], part[(space + 1)..].Trim());
            string Problem(string expected) => $"{where}: --{option} '{value}' is not {expected}";
            int Int()
            {
                if (!int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var v)) throw new TrainingConfigException(Problem("a whole number"));
                return v;
            }
            prompt = option.ToLowerInvariant() switch
            {
                "n" => prompt with { NegativePrompt = value },
                "w" => prompt with { Width = Int() },
                "h" => prompt with { Height = Int() },
                "d" => prompt with { Seed = long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var seed) ? seed : throw new TrainingConfigException(Problem("a seed (a whole number)")) },
                "l" => prompt with { CfgScale = double.TryParse(value, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var cfg) ? cfg : throw new TrainingConfigException(Problem("a CFG scale (a number)")) },
                // kohya clamps the steps to 1-1000.
                "s" => prompt with { Steps = Math.Clamp(Int(), 1, 1000) },
                "ss" => prompt with { Sampler = value },
                _ => throw new TrainingConfigException(
                    $"{where}: --{option} is not a sample option this appliance draws with; use --n (negative prompt), --w, --h, --d (seed), --l (CFG), --s (steps) or --ss (sampler)"),
            };
        }
        return prompt;
    }

    private static List<SamplePrompt> FromToml(string text, string where)
    {
        TomlTable document;
        try
        {
            document = TomlSerializer.Deserialize<TomlTable>(text, (TomlSerializerOptions?)null)!;
        }
        catch (TomlException e)
        {
            throw new TrainingConfigException($"{where} is not valid TOML: {e.Message}");
        }
        // kohya: every [[prompt.subset]] is [prompt]'s keys with its own on top.
        if (!document.TryGetValue("prompt", out var shared) || shared is not TomlTable common || !common.TryGetValue("subset", out var subsets) || subsets is not TomlTableArray list)
            throw new TrainingConfigException($"{where} needs a [prompt] table with [[prompt.subset]] entries, as kohya's sample prompt TOML has");
        return [.. list.Select((subset, i) =>
        {
            var keys = new Dictionary<string, object>(StringComparer.Ordinal);
            foreach (var (key, value) in common) if (key != "subset") keys[key] = value;
            foreach (var (key, value) in subset) keys[key] = value;
            return FromKeys(keys, $"{where} prompt.subset {i + 1}");
        })];
    }

    private static List<SamplePrompt> FromJson(string text, string where)
    {
        JsonElement root;
        try
        {
            root = JsonDocument.Parse(text).RootElement;
        }
        catch (JsonException e)
        {
            throw new TrainingConfigException($"{where} is not valid JSON: {e.Message}");
        }
        if (root.ValueKind != JsonValueKind.Array) throw new TrainingConfigException($"{where} must hold a list of prompts (strings in the .txt syntax, or objects)");
        return [.. root.EnumerateArray().Select((item, i) => item.ValueKind switch
        {
            JsonValueKind.String => ParseLine(item.GetString()!, $"{where} item {i + 1}"),
            JsonValueKind.Object => FromKeys(item.EnumerateObject().ToDictionary(p => p.Name, p => (object)(p.Value.ValueKind switch
            {
                JsonValueKind.String => p.Value.GetString()!,
                JsonValueKind.Number => p.Value.GetDouble(),
                _ => p.Value.GetRawText(),
            }), StringComparer.Ordinal), $"{where} item {i + 1}"),
            _ => throw new TrainingConfigException($"{where} item {i + 1} is neither a prompt line nor an object"),
        })];
    }

    /// <summary>A prompt from kohya's keys (prompt, negative_prompt, width, height, seed, scale, sample_steps, sample_sampler).</summary>
    private static SamplePrompt FromKeys(IReadOnlyDictionary<string, object> keys, string where)
    {
        string? Text(string key) => keys.TryGetValue(key, out var v) ? v as string ?? throw new TrainingConfigException($"{where}: {key} must be text") : null;
        double? Number(string key) => !keys.TryGetValue(key, out var v) ? null : v switch
        {
            long l => l,
            double d => d,
            _ => throw new TrainingConfigException($"{where}: {key} must be a number"),
        };
        int? Whole(string key) => Number(key) is { } n ? n == Math.Floor(n) && Math.Abs(n) <= int.MaxValue ? (int)n : throw new TrainingConfigException($"{where}: {key} {n} must be a whole number") : null;
        foreach (var key in keys.Keys)
            if (!KohyaKeys.Contains(key))
                throw new TrainingConfigException($"{where}: {key} is not a sample prompt key this appliance draws with; use {string.Join(", ", KohyaKeys)}");
        var prompt = Text("prompt") ?? throw new TrainingConfigException($"{where}: prompt is missing");
        var steps = Whole("sample_steps");
        return new SamplePrompt(prompt)
        {
            NegativePrompt = Text("negative_prompt"), Width = Whole("width"), Height = Whole("height"), Seed = Whole("seed"), CfgScale = Number("scale"),
            Steps = steps is { } s ? Math.Clamp(s, 1, 1000) : null, Sampler = Text("sample_sampler"),
        };
    }

    private static readonly string[] KohyaKeys = ["prompt", "negative_prompt", "width", "height", "seed", "scale", "sample_steps", "sample_sampler"];
}
