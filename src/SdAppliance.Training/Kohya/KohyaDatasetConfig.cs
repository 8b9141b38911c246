using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using SdAppliance.Training.Data;
using Tomlyn;
using Tomlyn.Model;

namespace SdAppliance.Training.Kohya;

/// <summary>
/// kohya sd-scripts' dataset config (<c>--dataset_config</c>, library/config_util.py): a <c>[general]</c> table,
/// <c>[[datasets]]</c> and their <c>[[datasets.subsets]]</c>, each subset one image folder. A value is looked up in the
/// subset, then its dataset, then <c>[general]</c>, and where none gives it the run's own setting applies (kohya's
/// argparse fallback). Each image subset becomes a concept (<c>image_dir</c>, <c>class_tokens</c> as the caption of
/// images without a caption file, <c>num_repeats</c>); an <c>is_reg</c> subset is a folder of class images shared by
/// every concept, as kohya pools regularization images. The dataset and augmentation keys map onto the run's settings,
/// which hold one value for the whole run, so subsets or datasets that set different values are refused. A key this
/// trainer does not apply is refused by name unless it holds kohya's default (then it changes nothing, and
/// <see cref="Ignored"/> names it); kohya refuses keys it does not know, and so do we.
/// </summary>
public sealed class KohyaDatasetConfig
{
    private const string Field = "dataset_config";

    /// <summary>Dataset keys (<c>[general]</c> or <c>[[datasets]]</c>) and the run setting each sets.</summary>
    private static readonly IReadOnlyDictionary<string, string> DatasetKeys = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["resolution"] = "resolution",
        ["batch_size"] = "train_batch_size",
        ["enable_bucket"] = "enable_bucket",
        ["min_bucket_reso"] = "min_bucket_reso",
        ["max_bucket_reso"] = "max_bucket_reso",
    };

    /// <summary>Subset keys (at any level) that set a run setting; random_crop is the opposite of center_crop.</summary>
    private static readonly IReadOnlyDictionary<string, string> SubsetKeys = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["flip_aug"] = "flip_aug",
        ["random_crop"] = "center_crop",
        ["shuffle_caption"] = "shuffle_caption",
        ["keep_tokens"] = "keep_tokens",
        ["caption_extension"] = "caption_extension",
        ["caption_dropout_rate"] = "caption_dropout_rate",
        ["alpha_mask"] = "alpha_mask",
    };

    /// <summary>Subset keys (at any level) that describe each subset's folder rather than the run.</summary>
    private static readonly IReadOnlySet<string> PerSubsetKeys = new HashSet<string>(StringComparer.Ordinal) { "num_repeats", "class_tokens" };

    /// <summary>Keys only a subset may hold.</summary>
    private static readonly IReadOnlySet<string> SubsetOnlyKeys = new HashSet<string>(StringComparer.Ordinal) { "image_dir", "is_reg" };

    /// <summary>
    /// kohya's keys this trainer does not apply, each with kohya's default: at that value it changes nothing and is only
    /// noted; another value would train differently, so it is refused. The level says where kohya takes it.
    /// </summary>
    private static readonly IReadOnlyDictionary<string, (object? Default, bool DatasetLevel, string What)> UnappliedKeys =
        new Dictionary<string, (object?, bool, string)>(StringComparer.Ordinal)
        {
            ["bucket_reso_steps"] = (64L, true, "the bucket step is kohya's default 64 here"),
            ["bucket_no_upscale"] = (false, true, "small images are upscaled to their bucket here"),
            ["network_multiplier"] = (1.0, true, "per-dataset network multipliers are not supported"),
            ["validation_split"] = (0.0, true, "validation splits are not supported"),
            ["validation_seed"] = (null, true, "validation splits are not supported"),
            ["color_aug"] = (false, false, "color augmentation is not supported"),
            ["face_crop_aug_range"] = (null, false, "face-crop augmentation is not supported"),
            ["keep_tokens_separator"] = ("", false, "keep_tokens counts comma-separated tags here"),
            ["secondary_separator"] = (null, false, "captions are split at commas only here"),
            ["caption_separator"] = (",", false, "captions are split at commas only here"),
            ["enable_wildcard"] = (false, false, "caption wildcards are not supported"),
            ["token_warmup_min"] = (1L, false, "token warmup is not supported"),
            ["token_warmup_step"] = (0L, false, "token warmup is not supported"),
            ["caption_prefix"] = (null, false, "caption prefixes are not supported (put the words in the captions)"),
            ["caption_suffix"] = (null, false, "caption suffixes are not supported (put the words in the captions)"),
            ["caption_dropout_every_n_epochs"] = (0L, false, "only caption_dropout_rate is supported"),
            ["caption_tag_dropout_rate"] = (0.0, false, "only caption_dropout_rate is supported"),
            ["cache_info"] = (false, false, "the dataset is scanned each run"),
            ["sample_ratio"] = (1.0, false, "subset sampling ratios are not supported"),
            ["resize_interpolation"] = (null, false, "images are resized with this trainer's own filter"),
            ["recursive"] = (false, false, "subset folders are not searched recursively (kohya N_name sub-folders are read)"),
            ["metadata_file"] = (null, false, "kohya's fine-tuning metadata is not supported: give an image folder with caption files, or a metadata.jsonl folder"),
            ["conditioning_data_dir"] = (null, false, "a subset's conditioning folder is not read: give the masks of masked_loss as the run's conditioning_data_dir"),
        };

    private KohyaDatasetConfig(string path, IReadOnlyDictionary<string, JsonNode> settings, IReadOnlyList<ConceptSpec> concepts,
        IReadOnlyList<RegularizationFolder> regularizationFolders, IReadOnlyList<string> ignored)
    {
        Path = path;
        Settings = settings;
        Concepts = concepts;
        RegularizationFolders = regularizationFolders;
        Ignored = ignored;
    }

    /// <summary>The file read.</summary>
    public string Path { get; }

    /// <summary>The run settings the file sets (run.json field → value).</summary>
    public IReadOnlyDictionary<string, JsonNode> Settings { get; }

    /// <summary>One concept per image subset, folders absolute.</summary>
    public IReadOnlyList<ConceptSpec> Concepts { get; }

    /// <summary>The <c>is_reg</c> subsets: class images shared by every concept.</summary>
    public IReadOnlyList<RegularizationFolder> RegularizationFolders { get; }

    /// <summary>Keys the file holds at kohya's default that this trainer does not apply ("datasets[0].color_aug = false"), which change nothing.</summary>
    public IReadOnlyList<string> Ignored { get; }

    /// <summary>
    /// <paramref name="settings"/> with the dataset config's settings laid over it (the file's values win, as in kohya, where
    /// the config file comes before the command line's values); unchanged without <see cref="TrainingConfig.DatasetConfig"/>.
    /// </summary>
    public static TrainingConfig Apply(TrainingConfig settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        if (settings.DatasetConfig is null) return settings;
        var read = Read(settings.DatasetConfig);
        var json = JsonSerializer.SerializeToNode(settings, TrainingConfig.Json)!.AsObject();
        foreach (var (key, value) in read.Settings) json[key] = value.DeepClone();
        return json.Deserialize<TrainingConfig>(TrainingConfig.Json)!;
    }

    /// <summary>
    /// Reads <paramref name="path"/>. Every problem (a key this trainer does not apply, a key at a level kohya does not take it,
    /// a value of the wrong type, settings that differ between subsets) is collected and refused in one
    /// <see cref="DatasetException"/> of <c>dataset_config</c> that names each by its place in the file. Relative folders are
    /// taken from the file's folder, so a dataset moves with its config.
    /// </summary>
    public static KohyaDatasetConfig Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw Fail($"'{path}' does not exist");
        TomlTable document;
        try
        {
            document = TomlSerializer.Deserialize<TomlTable>(File.ReadAllText(path), (TomlSerializerOptions?)null)!;
        }
        catch (TomlException e)
        {
            throw Fail($"'{path}' is not valid TOML: {e.Message}");
        }
        return new Reader(path).Read(document);
    }

    private static DatasetException Fail(string problem) => new(Field, Field, problem);

    /// <summary>One read of a file, collecting its problems.</summary>
    private sealed class Reader(string path)
    {
        private readonly List<string> problems = [];
        private readonly List<string> ignored = [];
        private readonly string baseDir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!;
        // The run setting → (its value, where it was set), to refuse a second, different value.
        private readonly Dictionary<string, (JsonNode Value, string Where)> settings = new(StringComparer.Ordinal);

        public KohyaDatasetConfig Read(TomlTable document)
        {
            var general = new TomlTable();
            foreach (var (key, value) in document)
            {
                if (key == "general" && value is TomlTable g) general = g;
                else if (key == "datasets" && value is TomlTableArray) { }
                else problems.Add($"{key}: not a table of kohya's dataset config (it has [general] and [[datasets]] with [[datasets.subsets]])");
            }
            CheckKeys(general, "general", Level.General);
            var datasets = document.TryGetValue("datasets", out var d) && d is TomlTableArray list ? list : [];
            if (datasets.Count == 0) problems.Add("datasets: no [[datasets]] (each with [[datasets.subsets]] naming an image_dir)");

            var concepts = new List<ConceptSpec>();
            var regularization = new List<RegularizationFolder>();
            for (int i = 0; i < datasets.Count; i++)
            {
                var dataset = datasets[i];
                var where = $"datasets[{i}]";
                CheckKeys(dataset, where, Level.Dataset);
                foreach (var key in DatasetKeys.Keys)
                    if (Lookup(key, dataset, general) is { } found)
                        SetDatasetValue(key, found.Value, found.Where == "general" ? "general" : where);
                var subsets = dataset.TryGetValue("subsets", out var s) && s is TomlTableArray sl ? sl : [];
                if (subsets.Count == 0) problems.Add($"{where}.subsets: no [[datasets.subsets]] (each names an image_dir)");
                for (int j = 0; j < subsets.Count; j++)
                {
                    var subset = subsets[j];
                    var at = $"{where}.subsets[{j}]";
                    CheckKeys(subset, at, Level.Subset);
                    foreach (var key in SubsetKeys.Keys)
                        if (Lookup(key, subset, dataset, general, at, where) is { } found) SetSubsetValue(key, found.Value, found.Where);
                    var folder = Text(subset, "image_dir", at);
                    if (folder is null)
                    {
                        if (!subset.ContainsKey("image_dir")) problems.Add($"{at}.image_dir: missing (every subset names its image folder)");
                        continue;
                    }
                    var full = System.IO.Path.GetFullPath(folder, baseDir);
                    var classTokens = Lookup("class_tokens", subset, dataset, general, at, where) is { } tokens ? AsText(tokens.Value, tokens.Where + ".class_tokens") : null;
                    var repeats = Lookup("num_repeats", subset, dataset, general, at, where) is { } r ? AsWhole(r.Value, r.Where + ".num_repeats") ?? 1 : 1;
                    var isReg = subset.TryGetValue("is_reg", out var reg) && AsBool(reg, at + ".is_reg") == true;
                    if (isReg) regularization.Add(new RegularizationFolder(full, classTokens));
                    else concepts.Add(new ConceptSpec(full, classTokens, Repeats: repeats));
                }
            }
            if (problems.Count == 0 && concepts.Count == 0)
                problems.Add("datasets: every subset is is_reg, give at least one subset of training images");
            if (problems.Count > 0)
                throw Fail($"'{path}' cannot be used as it is: {string.Join("; ", problems)}");
            return new KohyaDatasetConfig(path, settings.ToDictionary(p => p.Key, p => p.Value.Value, StringComparer.Ordinal), concepts, regularization, ignored);
        }

        private enum Level { General, Dataset, Subset }

        /// <summary>Every key of a table: one this trainer applies at this level, or a kohya key at its default (noted), else a problem.</summary>
        private void CheckKeys(TomlTable table, string where, Level level)
        {
            foreach (var (key, value) in table)
            {
                var at = $"{where}.{key}";
                if (level == Level.Dataset && key == "subsets") continue;
                bool datasetKey = DatasetKeys.ContainsKey(key) || (UnappliedKeys.TryGetValue(key, out var u) && u.DatasetLevel);
                bool subsetOnly = SubsetOnlyKeys.Contains(key) || key is "metadata_file" or "conditioning_data_dir" or "alpha_mask" or "recursive";
                bool known = datasetKey || subsetOnly || SubsetKeys.ContainsKey(key) || PerSubsetKeys.Contains(key) || UnappliedKeys.ContainsKey(key);
                if (!known)
                {
                    problems.Add($"{at}: not a key of kohya's dataset config this trainer knows");
                    continue;
                }
                if (level == Level.Subset && datasetKey)
                {
                    problems.Add($"{at}: a dataset key, which kohya takes it in [general] or [[datasets]], not in a subset");
                    continue;
                }
                if (level != Level.Subset && subsetOnly)
                {
                    problems.Add($"{at}: a subset key, which kohya takes it in [[datasets.subsets]] only");
                    continue;
                }
                if (UnappliedKeys.TryGetValue(key, out var unapplied))
                {
                    if (unapplied.Default is not null && IsDefault(value, unapplied.Default))
                        ignored.Add($"{at} = {Show(value)}");
                    else
                        problems.Add($"{at} = {Show(value)}: not applied by this trainer ({unapplied.What}): remove it{(unapplied.Default is null ? "" : $" or set kohya's default {Show(unapplied.Default)}")}");
                }
            }
        }

        /// <summary>The first of the tables (innermost first) that gives <paramref name="key"/>, with where it was found.</summary>
        private static (object Value, string Where)? Lookup(string key, TomlTable dataset, TomlTable general) =>
            dataset.TryGetValue(key, out var v) ? (v, "") : general.TryGetValue(key, out var g) ? (g, "general") : null;

        private static (object Value, string Where)? Lookup(string key, TomlTable subset, TomlTable dataset, TomlTable general, string subsetAt, string datasetAt) =>
            subset.TryGetValue(key, out var s) ? (s, subsetAt)
            : dataset.TryGetValue(key, out var d) ? (d, datasetAt)
            : general.TryGetValue(key, out var g) ? (g, "general") : null;

        private void SetDatasetValue(string key, object value, string where)
        {
            var at = $"{where}.{key}";
            JsonNode? node = key switch
            {
                "resolution" => Resolution(value, at),
                "enable_bucket" => AsBool(value, at) is { } b ? JsonValue.Create(b) : null,
                _ => AsWhole(value, at) is { } n ? JsonValue.Create(n) : null,
            };
            if (node is not null) Set(DatasetKeys[key], node, at);
        }

        private void SetSubsetValue(string key, object value, string where)
        {
            var at = $"{where}.{key}";
            JsonNode? node = key switch
            {
                "flip_aug" or "shuffle_caption" or "alpha_mask" => AsBool(value, at) is { } b ? JsonValue.Create(b) : null,
                "random_crop" => AsBool(value, at) is { } random ? JsonValue.Create(!random) : null,
                "keep_tokens" => AsWhole(value, at) is { } n ? JsonValue.Create(n) : null,
                "caption_extension" => AsText(value, at) is { } text ? JsonValue.Create(text) : null,
                "caption_dropout_rate" => AsNumber(value, at) is { } rate ? JsonValue.Create(rate) : null,
                _ => throw new InvalidOperationException(key),
            };
            if (node is not null) Set(SubsetKeys[key], node, at);
        }

        /// <summary>kohya's resolution: one side, or [width, height], which must be square here.</summary>
        private JsonNode? Resolution(object value, string at)
        {
            if (value is TomlArray { Count: 2 } pair)
            {
                var (w, h) = (AsWhole(pair[0]!, at), AsWhole(pair[1]!, at));
                if (w is null || h is null) return null;
                if (w != h)
                {
                    problems.Add($"{at} = [{w}, {h}]: training sizes are square here (resolution is one side, enable_bucket trains other aspect ratios at that area)");
                    return null;
                }
                return JsonValue.Create(w.Value);
            }
            return AsWhole(value, at) is { } side ? JsonValue.Create(side) : null;
        }

        /// <summary>Records a run setting; the same setting given another value elsewhere in the file is a problem.</summary>
        private void Set(string field, JsonNode value, string at)
        {
            if (settings.TryGetValue(field, out var earlier))
            {
                if (!JsonNode.DeepEquals(earlier.Value, value))
                    problems.Add($"{at}: {Show(value)} differs from {earlier.Where}'s {Show(earlier.Value)}: this trainer applies one value to every dataset and subset (make them agree, or train them in separate runs)");
                return;
            }
            settings[field] = (value, at);
        }

        private string? Text(TomlTable table, string key, string where) => table.TryGetValue(key, out var value) ? AsText(value, $"{where}.{key}") : null;

        private string? AsText(object value, string at)
        {
            if (value is string s) return s;
            problems.Add($"{at}: must be text, got {Show(value)}");
            return null;
        }

        private bool? AsBool(object value, string at)
        {
            if (value is bool b) return b;
            problems.Add($"{at}: must be true or false, got {Show(value)}");
            return null;
        }

        private int? AsWhole(object value, string at)
        {
            if (value is long n && n is >= int.MinValue and <= int.MaxValue) return (int)n;
            problems.Add($"{at}: must be a whole number, got {Show(value)}");
            return null;
        }

        private double? AsNumber(object value, string at)
        {
            if (value is long n) return n;
            if (value is double d) return d;
            problems.Add($"{at}: must be a number, got {Show(value)}");
            return null;
        }

        private static bool IsDefault(object value, object kohyaDefault) => (value, kohyaDefault) switch
        {
            (long a, long b) => a == b,
            (long a, double b) => a == b,
            (double a, double b) => a == b,
            (double a, long b) => a == b,
            _ => Equals(value, kohyaDefault),
        };

        private static string Show(object? value) => value switch
        {
            null => "nothing",
            string s => JsonSerializer.Serialize(s),
            bool b => b ? "true" : "false",
            double d => d.ToString("R", CultureInfo.InvariantCulture),
            IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
            TomlArray a => $"[{string.Join(", ", a.Select(Show))}]",
            JsonNode n => n.ToJsonString(),
            TomlTable => "a table",
            _ => value.ToString() ?? "",
        };
    }
}

/// <summary>A folder of class (regularization) images not tied to one concept: kohya's <c>is_reg</c> subset, whose images every concept draws.</summary>
/// <param name="ClassPrompt">The caption of its images without a caption file (kohya's class_tokens).</param>
public sealed record RegularizationFolder(string Folder, string? ClassPrompt);
