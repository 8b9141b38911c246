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
/// Where the training images are and how they become examples. <see cref="DataDir"/> with the class fields
/// (<see cref="ClassPrompt"/>, <see cref="ClassDataDir"/>, <see cref="NumClassImages"/>) is one concept; the
/// <see cref="Concepts"/> list adds more (each with its own class fields). Either or both may be given.
/// </summary>
public sealed record DatasetOptions
{
    /// <summary>
    /// Images with their caption files; kohya's <c>N_name</c> sub-folders add N repeats of their images, with
    /// <c>name</c> as the caption of an image that has no caption file. Other sub-folders are listed as skipped.
    /// </summary>
    public string? DataDir { get; init; }

    public IReadOnlyList<ConceptSpec> Concepts { get; init; } = [];

    /// <summary>The caption of an image that has no caption file (also for concepts that give no prompt).</summary>
    public string? InstancePrompt { get; init; }

    /// <summary>The caption of a class image of <see cref="DataDir"/> without a caption file, and the prompt that generates missing ones.</summary>
    public string? ClassPrompt { get; init; }

    public string? ClassDataDir { get; init; }

    /// <summary>How many class images <see cref="ClassDataDir"/> should hold; only that many are used when it holds more (as diffusers' DreamBooth).</summary>
    public int NumClassImages { get; init; }

    public string CaptionExtension { get; init; } = ".txt";

    public int Resolution { get; init; } = 512;

    /// <summary>Crop the overflow evenly from both sides; false: a random window (seeded) each time an example is drawn.</summary>
    public bool CenterCrop { get; init; } = true;

    public bool EnableBucket { get; init; }

    public int MinBucketReso { get; init; } = 256;

    public int MaxBucketReso { get; init; } = 1024;

    public int BucketResoSteps { get; init; } = 64;

    public bool FlipAug { get; init; }

    public bool ShuffleCaption { get; init; }

    public int KeepTokens { get; init; }

    public double CaptionDropoutRate { get; init; }

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

/// <summary>A dataset or its options cannot be used; <see cref="Field"/> names the option or folder at fault.</summary>
public sealed class DatasetException : UserInputException
{
    public DatasetException(string message) : base(message, null, message, null, null) { }

    public DatasetException(string field, string message) : base(message, field, message, null, null) => Field = field;

    /// <summary>The option (or concepts-list entry) the message is about, when there is one.</summary>
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
