using SdAppliance.Formats;
using System.Text.Json;

namespace SdAppliance.Training.Data;

/// <summary>
/// One concept of a DreamBooth-style concepts list: a folder of instance images, the prompt used for images
/// without a caption file, and optionally a class (prior preservation) folder with its prompt and the number of
/// class images wanted there. Every field may be null or default; <see cref="TrainingDataset.Scan"/> says what
/// is missing.
/// </summary>
public sealed record ConceptSpec(string InstanceDataDir, string? InstancePrompt = null, string? ClassPrompt = null,
    string? ClassDataDir = null, int Repeats = 1, int NumClassImages = 0);

/// <summary>
/// Where the training images are and how they become examples: a view of a run's <see cref="TrainingConfig"/>, whose
/// fields hold each setting, its default and its description (one place for each). <see cref="DataDir"/> with the class
/// fields (<see cref="ClassPrompt"/>, <see cref="ClassDataDir"/>, <see cref="NumClassImages"/>) is one concept; the
/// <see cref="Concepts"/> list adds more (each with its own class fields). Either or both may be given. Setting a
/// property here sets the config's field (<c>options with { Resolution = 64 }</c>).
/// </summary>
public sealed record DatasetOptions
{
    public DatasetOptions()
    {
    }

    /// <summary>The dataset of <paramref name="settings"/>, its concepts list (<see cref="TrainingConfig.Concepts"/>) not yet read.</summary>
    public DatasetOptions(TrainingConfig settings) => Settings = settings;

    /// <summary>The dataset of a run: its settings, with the concepts list read from its file.</summary>
    public static DatasetOptions Of(TrainingConfig settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var concepts = settings.Concepts is null ? [] : ReadConcepts(settings.Concepts);
        if (settings.DatasetConfig is null) return new(settings) { Concepts = concepts };
        var kohya = Kohya.KohyaDatasetConfig.Read(settings.DatasetConfig);
        return new(settings) { Concepts = [.. concepts, .. kohya.Concepts], RegularizationFolders = kohya.RegularizationFolders };
    }

    /// <summary>The run settings this is a view of.</summary>
    public TrainingConfig Settings { get; init; } = new();

    /// <summary>
    /// Images with their caption files (<see cref="TrainingConfig.Data"/>); kohya's <c>N_name</c> sub-folders add N repeats of
    /// their images, with <c>name</c> as the caption of an image that has no caption file. Other sub-folders are listed as skipped.
    /// </summary>
    public string? DataDir { get => Settings.Data; init => Settings = Settings with { Data = value }; }

    /// <summary>The concepts of <see cref="TrainingConfig.Concepts"/>'s list, or given directly.</summary>
    public IReadOnlyList<ConceptSpec> Concepts { get; init; } = [];

    /// <summary>Class images every concept draws (kohya's is_reg subsets), besides each concept's own class folder.</summary>
    public IReadOnlyList<Kohya.RegularizationFolder> RegularizationFolders { get; init; } = [];

    /// <summary>The caption of an image that has no caption file (also for concepts that give no prompt).</summary>
    public string? InstancePrompt { get => Settings.InstancePrompt; init => Settings = Settings with { InstancePrompt = value }; }

    /// <summary>The caption of a class image of <see cref="DataDir"/> without a caption file, and the prompt that generates missing ones.</summary>
    public string? ClassPrompt { get => Settings.ClassPrompt; init => Settings = Settings with { ClassPrompt = value }; }

    public string? ClassDataDir { get => Settings.ClassData; init => Settings = Settings with { ClassData = value }; }

    /// <summary>How many class images <see cref="ClassDataDir"/> should hold; only that many are used when it holds more (as diffusers' DreamBooth).</summary>
    public int NumClassImages { get => Settings.NumClassImages; init => Settings = Settings with { NumClassImages = value }; }

    public string CaptionExtension { get => Settings.CaptionExtension; init => Settings = Settings with { CaptionExtension = value }; }

    public string CaptionColumn { get => Settings.CaptionColumn; init => Settings = Settings with { CaptionColumn = value }; }

    public string ImageColumn { get => Settings.ImageColumn; init => Settings = Settings with { ImageColumn = value }; }

    public bool UseFilenameAsLabel { get => Settings.UseFilenameAsLabel; init => Settings = Settings with { UseFilenameAsLabel = value }; }

    public int Resolution { get => Settings.Resolution; init => Settings = Settings with { Resolution = value }; }

    /// <summary>Crop the overflow evenly from both sides; false: a random window (seeded) each time an example is drawn.</summary>
    public bool CenterCrop { get => Settings.CenterCrop; init => Settings = Settings with { CenterCrop = value }; }

    public bool EnableBucket { get => Settings.EnableBucket; init => Settings = Settings with { EnableBucket = value }; }

    public int MinBucketReso { get => Settings.MinBucketReso; init => Settings = Settings with { MinBucketReso = value }; }

    public int MaxBucketReso { get => Settings.MaxBucketReso; init => Settings = Settings with { MaxBucketReso = value }; }

    public bool FlipAug { get => Settings.FlipAug; init => Settings = Settings with { FlipAug = value }; }

    public bool ShuffleCaption { get => Settings.ShuffleCaption; init => Settings = Settings with { ShuffleCaption = value }; }

    public int KeepTokens { get => Settings.KeepTokens; init => Settings = Settings with { KeepTokens = value }; }

    public double CaptionDropoutRate { get => Settings.CaptionDropoutRate; init => Settings = Settings with { CaptionDropoutRate = value }; }

    // The dataset's own knobs, which a run does not set.

    /// <summary>kohya's bucket side step; it keeps its default of 64.</summary>
    public int BucketResoSteps { get; init; } = 64;

    /// <summary>
    /// Images smaller than this on either side are skipped: below 64 px the VAE's latent is under 8×8 and the
    /// upscale to the training resolution is mostly blur. kohya has no such rule; this is ours.
    /// </summary>
    public int MinImageSide { get; init; } = 64;

    /// <summary>
    /// Decode every image once during <see cref="TrainingDataset.Scan"/>, so a truncated file is skipped then
    /// rather than stopping the run when it is first drawn. Headers alone (off) are much faster on large sets.
    /// </summary>
    public bool VerifyImages { get; init; } = true;

    /// <summary>
    /// The name users know a property by: its run.json field (<see cref="DataDir"/> is <c>data</c>, <see cref="ClassDataDir"/>
    /// <c>class_data</c>, the rest in snake_case: <c>resolution</c>, <c>bucket_reso_steps</c>).
    /// </summary>
    public static string FieldName(string property) => property switch
    {
        nameof(DataDir) => "data",
        nameof(ClassDataDir) => "class_data",
        _ => JsonNamingPolicy.SnakeCaseLower.ConvertName(property),
    };

    /// <summary>
    /// Reads the concepts list users keep for DreamBooth scripts: a JSON array (or an object with a
    /// <c>concepts</c> array) of objects with <c>instance_prompt</c>, <c>class_prompt</c>, <c>instance_data_dir</c>,
    /// <c>class_data_dir</c>, <c>repeats</c> and <c>num_class_images</c>. Other keys are ignored. Relative folders
    /// are taken from the JSON file's folder, so a dataset moves with its list.
    /// </summary>
    public static IReadOnlyList<ConceptSpec> ReadConcepts(string jsonPath)
    {
        ArgumentNullException.ThrowIfNull(jsonPath);
        if (!File.Exists(jsonPath)) throw new DatasetException("concepts", $"concepts list '{jsonPath}' does not exist");
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(File.ReadAllText(jsonPath), new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
        }
        catch (JsonException e)
        {
            throw new DatasetException("concepts", $"concepts list '{jsonPath}' is not valid JSON: {e.Message}");
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind == JsonValueKind.Object && root.TryGetProperty("concepts", out var inner)) root = inner;
            if (root.ValueKind != JsonValueKind.Array)
                throw new DatasetException("concepts", $"concepts list '{jsonPath}' must be a JSON array of concept objects, got {root.ValueKind}");
            var baseDir = Path.GetDirectoryName(Path.GetFullPath(jsonPath))!;
            var concepts = new List<ConceptSpec>();
            int index = 0;
            foreach (var element in root.EnumerateArray())
            {
                string where = $"concepts[{index}]";
                if (element.ValueKind != JsonValueKind.Object)
                    throw new DatasetException(where, $"{where} in '{jsonPath}' must be an object, got {element.ValueKind}");
                var instanceDir = Text(element, "instance_data_dir", where, jsonPath)
                    ?? throw new DatasetException($"{where}.instance_data_dir", $"{where}.instance_data_dir is missing in '{jsonPath}'");
                var classDir = Text(element, "class_data_dir", where, jsonPath);
                concepts.Add(new ConceptSpec(
                    Path.GetFullPath(instanceDir, baseDir),
                    Text(element, "instance_prompt", where, jsonPath),
                    Text(element, "class_prompt", where, jsonPath),
                    classDir is null ? null : Path.GetFullPath(classDir, baseDir),
                    Integer(element, "repeats", where, jsonPath) ?? 1,
                    Integer(element, "num_class_images", where, jsonPath) ?? 0));
                index++;
            }
            return concepts;
        }
    }

    private static string? Text(JsonElement element, string name, string where, string path)
    {
        if (!element.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return null;
        if (value.ValueKind != JsonValueKind.String)
            throw new DatasetException($"{where}.{name}", $"{where}.{name} in '{path}' must be a string, got {value.ValueKind}");
        return value.GetString();
    }

    private static int? Integer(JsonElement element, string name, string where, string path)
    {
        if (!element.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return null;
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt32(out int result))
            throw new DatasetException($"{where}.{name}", $"{where}.{name} in '{path}' must be a whole number, got {value.GetRawText()}");
        return result;
    }
}

/// <summary>
/// A dataset or its options cannot be used. The message and <see cref="UserInputException.Subject"/> name the setting as users
/// know it (<c>data</c>, <c>concepts[0].repeats</c>); <see cref="Field"/> names it for code (the <see cref="DatasetOptions"/> property).
/// </summary>
public sealed class DatasetException : UserInputException
{
    public DatasetException(string message) : base(message, null, message, null, null) { }

    public DatasetException(string field, string message) : base(message, field, message, null, null) => Field = field;

    /// <summary>A refusal of <paramref name="field"/> (a property), known to users as <paramref name="subject"/>: "subject: problem".</summary>
    public DatasetException(string field, string subject, string problem) : base($"{subject}: {problem}", subject, problem, null, null) => Field = field;

    /// <summary>The option (a <see cref="DatasetOptions"/> property, or a concepts-list entry) the message is about, when there is one.</summary>
    public string? Field { get; }
}

/// <summary>An image of the dataset (instance or class), with its caption before any augmentation.</summary>
/// <param name="Caption">The caption file's first line, or the fallback prompt when there is no caption file.</param>
/// <param name="Concept">The concept's folder: <see cref="DatasetOptions.DataDir"/> or the concept's instance_data_dir (for its class images too).</param>
public sealed record ImageItem(string Path, string Caption, bool IsPrior, string Concept)
{
    /// <summary>Upright size from the file header at scan time.</summary>
    public int Width { get; init; }

    public int Height { get; init; }

    /// <summary>How many times the image is drawn per epoch (folder N × concept repeats; 1 for class images).</summary>
    public int Repeats { get; init; } = 1;

    /// <summary>Whether <see cref="Caption"/> came from a caption file (false: the folder's or concept's prompt).</summary>
    public bool HasCaptionFile { get; init; }
}

/// <summary>A file or folder left out of the dataset, and why.</summary>
public sealed record SkippedFile(string Path, string Reason);

/// <summary>
/// One draw of an image: the bucket it is trained at, the crop window within the image resized to cover the
/// bucket, whether it is mirrored, and the caption after shuffling and dropout.
/// </summary>
public sealed record TrainingExample(ImageItem Item, int BucketWidth, int BucketHeight, bool Flip, int CropLeft, int CropTop, string Caption);
