using System.Globalization;
using System.Text;
using System.Text.Json;
using SdAppliance.Imaging;

namespace SdAppliance.Training.Data;

/// <summary>
/// Finds and checks a dataset's images (<see cref="TrainingDataset.Scan"/>). A data folder's own images are drawn once
/// per epoch; its kohya <c>N_name</c> sub-folders N times, with <c>name</c> as the caption of their images without a
/// caption file (kohya's <c>class_tokens</c>), the instance prompt otherwise. Images are PNG, JPEG or WebP (told by their
/// bytes); other image files, tiny or corrupt images, and unreadable captions are skipped with the reason. Hidden files
/// and folders (a leading dot, such as the <c>.latents</c> cache) are not looked at. A folder holding a <c>metadata.jsonl</c>
/// is a Hugging Face image folder instead: its images are the lines' <c>file_name</c>s, their captions the caption column's
/// values. A folder of Parquet files (directly in it, or the hub's <c>data/train-*.parquet</c>) is read through
/// <see cref="ParquetImages"/>: its rows' images, captioned by the caption column. A bad option is a
/// <see cref="DatasetException"/> whose message names the run.json field (<c>data</c>, <c>resolution</c>).
/// </summary>
internal static class DatasetScanner
{
    /// <summary>Image extensions we decode. The format itself is told from the file's bytes.</summary>
    public static readonly IReadOnlySet<string> ImageExtensions = new HashSet<string>(StringComparer.OrdinalIgnoreCase) { ".png", ".jpg", ".jpeg", ".webp" };

    /// <summary>Image extensions users put in datasets that we do not decode: listed as skipped rather than silently ignored.</summary>
    public static readonly IReadOnlySet<string> UnsupportedImageExtensions = new HashSet<string>(StringComparer.OrdinalIgnoreCase)
    {
        ".bmp", ".gif", ".tif", ".tiff", ".avif", ".heic", ".heif", ".jxl", ".ico", ".psd", ".tga", ".jp2",
    };

    /// <summary>What every folder of one scan shares: the options, the caption extension with its dot, the class folders, the skipped list.</summary>
    private sealed record ScanContext(DatasetOptions Options, string CaptionExtension, IReadOnlySet<string> ClassFolders, List<SkippedFile> Skipped,
        CancellationToken CancellationToken);

    public static TrainingDataset Scan(DatasetOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        var captionExtension = CheckOptions(options);
        var concepts = ResolveConcepts(options);
        var candidates = options.EnableBucket
            ? AdjustedBuckets(options)
            : [(options.Resolution, options.Resolution)];

        var skipped = new List<SkippedFile>();
        var items = new List<ImageItem>();
        var itemConcept = new List<int>();
        var priorItems = new List<ImageItem>();
        var priorByConcept = new int[concepts.Count][];
        var classFound = new int[concepts.Count];
        // A class folder kept inside a data folder is not one of its sub-folders.
        var classFolders = concepts.Where(c => c.Spec.ClassDataDir is not null).Select(c => Path.TrimEndingDirectorySeparator(c.Spec.ClassDataDir!))
            .Concat(options.RegularizationFolders.Select(r => Path.TrimEndingDirectorySeparator(Path.GetFullPath(r.Folder)))).ToHashSet(StringComparer.Ordinal);
        var scan = new ScanContext(options, captionExtension, classFolders, skipped, cancellationToken);
        for (int c = 0; c < concepts.Count; c++)
        {
            var (spec, _) = concepts[c];
            foreach (var item in ScanFolder(spec.InstanceDataDir, spec.InstancePrompt, spec.Repeats, spec.InstanceDataDir, false, scan))
            {
                items.Add(item);
                itemConcept.Add(c);
            }
            var classItems = spec.ClassDataDir is not null && Directory.Exists(spec.ClassDataDir)
                ? ScanFolder(spec.ClassDataDir, spec.ClassPrompt, 1, spec.InstanceDataDir, true, scan).ToList()
                : [];
            classFound[c] = classItems.Count;
            // diffusers' DreamBooth uses only the first num_class_images when the folder holds more.
            if (spec.NumClassImages > 0 && classItems.Count > spec.NumClassImages) classItems.RemoveRange(spec.NumClassImages, classItems.Count - spec.NumClassImages);
            priorByConcept[c] = Enumerable.Range(priorItems.Count, classItems.Count).ToArray();
            priorItems.AddRange(classItems);
        }

        // Shared class folders (kohya's is_reg subsets) belong to no concept: every concept without its own class images draws them.
        foreach (var shared in options.RegularizationFolders)
        {
            var folder = Path.GetFullPath(shared.Folder);
            if (!Directory.Exists(folder))
                throw Fail("dataset_config", $"the regularization folder '{folder}' (an is_reg subset's image_dir) does not exist");
            priorItems.AddRange(ScanFolder(folder, shared.ClassPrompt, 1, folder, true, scan));
        }

        if (items.Count == 0)
        {
            var field = options.DataDir is not null ? nameof(DatasetOptions.DataDir) : options.Settings.DatasetConfig is not null ? "dataset_config" : "concepts";
            var folders = string.Join(", ", concepts.Select(c => $"'{c.Spec.InstanceDataDir}'"));
            var reasons = skipped.Count == 0 ? "" : $"; skipped: {string.Join("; ", skipped.Take(5).Select(s => $"{Path.GetFileName(s.Path)}: {s.Reason}"))}{(skipped.Count > 5 ? $" and {skipped.Count - 5} more" : "")}";
            throw Fail(field, $"no usable training images in {folders} (PNG, JPEG or WebP, directly in the folder or in kohya N_name sub-folders){reasons}");
        }
        for (int c = 0; c < concepts.Count; c++)
        {
            var (spec, names) = concepts[c];
            if (spec.ClassDataDir is null) continue;
            int missing = spec.NumClassImages - classFound[c];
            if (missing > 0 && string.IsNullOrWhiteSpace(spec.ClassPrompt))
                throw Fail(names.ClassPrompt, $"{missing} class images are missing from '{spec.ClassDataDir}' and there is no class prompt to generate them with");
            if (spec.NumClassImages == 0 && classFound[c] == 0)
                throw Fail(names.ClassDataDir, $"no usable class images in '{spec.ClassDataDir}' (set {FieldName(names.NumClassImages)} to generate them)");
        }
        return new TrainingDataset(options, [.. concepts.Select(c => c.Spec)], items, itemConcept, priorItems, priorByConcept, classFound, skipped, candidates);
    }

    private sealed record FieldNames(string InstanceDataDir, string ClassDataDir, string ClassPrompt, string NumClassImages, string Repeats);

    private static string CheckOptions(DatasetOptions o)
    {
        if (o.DataDir is null && o.Concepts.Count == 0)
            throw Fail(nameof(o.DataDir), "no training data given (a data folder, or a concepts list)");
        if (o.Resolution < 64 || o.Resolution % 8 != 0)
            throw Fail(nameof(o.Resolution), $"{o.Resolution} must be at least 64 and a multiple of 8 (the VAE's downscale)");
        if (o.KeepTokens < 0) throw Fail(nameof(o.KeepTokens), $"{o.KeepTokens} must not be negative");
        if (!(o.CaptionDropoutRate >= 0 && o.CaptionDropoutRate <= 1))
            throw Fail(nameof(o.CaptionDropoutRate), $"{o.CaptionDropoutRate} must be between 0 and 1");
        if (o.NumClassImages < 0) throw Fail(nameof(o.NumClassImages), $"{o.NumClassImages} must not be negative");
        if (o.MinImageSide < 1) throw Fail(nameof(o.MinImageSide), $"{o.MinImageSide} must be at least 1");
        if (string.IsNullOrWhiteSpace(o.CaptionExtension) || o.CaptionExtension.Trim('.').Length == 0 || o.CaptionExtension.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0)
            throw Fail(nameof(o.CaptionExtension), $"'{o.CaptionExtension}' is not a file extension (for example .txt or .caption)");
        if (string.IsNullOrWhiteSpace(o.CaptionColumn))
            throw Fail(nameof(o.CaptionColumn), "give the metadata.jsonl or Parquet column that holds the captions (the diffusers scripts' default is text)");
        if (string.IsNullOrWhiteSpace(o.ImageColumn))
            throw Fail(nameof(o.ImageColumn), "give the Parquet column that holds the images (the diffusers scripts' default is image)");
        if (o.EnableBucket) AdjustedBuckets(o);
        return o.CaptionExtension.StartsWith('.') ? o.CaptionExtension : "." + o.CaptionExtension;
    }

    /// <summary>kohya's bucket list after its adjustment of min/max to multiples of the step (min down, max up), which must bracket the resolution.</summary>
    private static IReadOnlyList<(int, int)> AdjustedBuckets(DatasetOptions o)
    {
        int steps = o.BucketResoSteps;
        if (steps < 8 || steps % 8 != 0)
            throw Fail(nameof(o.BucketResoSteps), $"{steps} must be a positive multiple of 8 (kohya uses 64)");
        int min = o.MinBucketReso - (o.MinBucketReso % steps);
        int max = o.MaxBucketReso % steps == 0 ? o.MaxBucketReso : o.MaxBucketReso + steps - (o.MaxBucketReso % steps);
        if (min < steps)
            throw Fail(nameof(o.MinBucketReso), $"{o.MinBucketReso} must be at least {FieldName(nameof(o.BucketResoSteps))} ({steps})");
        if (min > o.Resolution)
            throw Fail(nameof(o.MinBucketReso), $"{o.MinBucketReso} (as a multiple of {steps}: {min}) must not exceed {FieldName(nameof(o.Resolution))} {o.Resolution}");
        if (max < o.Resolution)
            throw Fail(nameof(o.MaxBucketReso), $"{o.MaxBucketReso} (as a multiple of {steps}: {max}) must not be below {FieldName(nameof(o.Resolution))} {o.Resolution}");
        return AspectBuckets.MakeBucketResolutions(o.Resolution, o.Resolution, min, max, steps);
    }

    /// <summary>The concepts with absolute folders and fallback prompts, every folder checked before any image is read.</summary>
    private static List<(ConceptSpec Spec, FieldNames Names)> ResolveConcepts(DatasetOptions o)
    {
        var concepts = new List<(ConceptSpec, FieldNames)>();
        if (o.DataDir is not null)
        {
            concepts.Add((new ConceptSpec(Path.GetFullPath(o.DataDir), o.InstancePrompt, o.ClassPrompt,
                o.ClassDataDir is null ? null : Path.GetFullPath(o.ClassDataDir), 1, o.NumClassImages),
                new FieldNames(nameof(o.DataDir), nameof(o.ClassDataDir), nameof(o.ClassPrompt), nameof(o.NumClassImages), nameof(o.DataDir))));
        }
        else if (o.ClassDataDir is not null || o.ClassPrompt is not null || o.NumClassImages > 0)
        {
            var field = o.ClassDataDir is not null ? nameof(o.ClassDataDir) : o.ClassPrompt is not null ? nameof(o.ClassPrompt) : nameof(o.NumClassImages);
            throw Fail(field, $"the class options go with {FieldName(nameof(o.DataDir))}, which is not set; give class_data_dir, class_prompt and num_class_images in each concept instead");
        }
        for (int i = 0; i < o.Concepts.Count; i++)
        {
            var c = o.Concepts[i];
            string p = $"concepts[{i}]";
            if (string.IsNullOrWhiteSpace(c.InstanceDataDir))
                throw Fail($"{p}.instance_data_dir", "no folder given");
            concepts.Add((c with
            {
                InstanceDataDir = Path.GetFullPath(c.InstanceDataDir),
                InstancePrompt = c.InstancePrompt ?? o.InstancePrompt,
                ClassDataDir = c.ClassDataDir is null ? null : Path.GetFullPath(c.ClassDataDir),
            }, new FieldNames($"{p}.instance_data_dir", $"{p}.class_data_dir", $"{p}.class_prompt", $"{p}.num_class_images", $"{p}.repeats")));
        }
        foreach (var (spec, names) in concepts)
        {
            if (spec.Repeats < 1) throw Fail(names.Repeats, $"{spec.Repeats} must be at least 1");
            if (spec.NumClassImages < 0) throw Fail(names.NumClassImages, $"{spec.NumClassImages} must not be negative");
            if (!Directory.Exists(spec.InstanceDataDir))
                throw Fail(names.InstanceDataDir, $"folder '{spec.InstanceDataDir}' does not exist");
            if (spec.ClassDataDir is null)
            {
                if (!string.IsNullOrWhiteSpace(spec.ClassPrompt))
                    throw Fail(names.ClassDataDir, $"a class prompt is set ('{spec.ClassPrompt}') but no class data folder to hold the class images");
                if (spec.NumClassImages > 0)
                    throw Fail(names.ClassDataDir, $"{FieldName(names.NumClassImages)} is {spec.NumClassImages} but no class data folder is set");
            }
            // A class folder may be missing only when its images are still to be generated into it.
            else if (!Directory.Exists(spec.ClassDataDir) && spec.NumClassImages == 0)
            {
                throw Fail(names.ClassDataDir, $"folder '{spec.ClassDataDir}' does not exist (set {FieldName(names.NumClassImages)} to generate class images into it)");
            }
        }
        return concepts;
    }

    /// <summary>A folder's own images, then those of its kohya <c>N_name</c> sub-folders (N repeats, <c>name</c> as fallback caption).</summary>
    private static IEnumerable<ImageItem> ScanFolder(string folder, string? prompt, int repeats, string concept, bool isPrior, ScanContext scan)
    {
        var metadata = Path.Combine(folder, MetadataFile);
        if (File.Exists(metadata))
        {
            foreach (var item in ScanMetadata(metadata, prompt ?? "", repeats, concept, isPrior, scan))
                yield return item;
            yield break;
        }
        if (ParquetImages.Files(folder) is { Count: > 0 } parquetFiles)
        {
            foreach (var parquet in parquetFiles)
                foreach (var row in ParquetImages.Read(parquet, scan.Options.ImageColumn, scan.Options.CaptionColumn, scan.Skipped, scan.CancellationToken))
                    if (Item(row.ImagePath, row.Caption, prompt ?? "", repeats, concept, isPrior, scan, row.OriginalName) is { } item)
                        yield return item;
            yield break;
        }
        var skipped = scan.Skipped;
        foreach (var item in ScanImages(folder, prompt ?? "", repeats, concept, isPrior, scan))
            yield return item;
        foreach (var sub in Directory.EnumerateDirectories(folder).Order(StringComparer.Ordinal))
        {
            var name = Path.GetFileName(sub);
            if (name.StartsWith('.') || scan.ClassFolders.Contains(Path.TrimEndingDirectorySeparator(Path.GetFullPath(sub)))) continue;
            var (count, tokens) = ParseRepeatsFolder(name);
            if (count is null)
            {
                skipped.Add(new SkippedFile(sub, "folder name does not start with a repeat count (kohya's N_name, for example 10_sks dog)"));
                continue;
            }
            if (count < 1)
            {
                skipped.Add(new SkippedFile(sub, $"repeat count {count} is below 1"));
                continue;
            }
            var fallback = tokens.Length > 0 ? tokens : prompt ?? "";
            foreach (var item in ScanImages(sub, fallback, repeats * count.Value, concept, isPrior, scan))
                yield return item;
        }
    }

    /// <summary>kohya's <c>extract_dreambooth_params</c>: the text before the first underscore is the repeat count, the rest (underscores kept) the class tokens.</summary>
    internal static (int? Repeats, string Name) ParseRepeatsFolder(string name)
    {
        int underscore = name.IndexOf('_');
        var head = underscore < 0 ? name : name[..underscore];
        var rest = underscore < 0 ? "" : name[(underscore + 1)..];
        return int.TryParse(head, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int n) ? (n, rest) : (null, rest);
    }

    /// <summary>The Hugging Face image-folder index: one JSON object per line, with the image's <c>file_name</c> and its caption.</summary>
    public const string MetadataFile = "metadata.jsonl";

    /// <summary>
    /// The images a <c>metadata.jsonl</c> lists (file names relative to its folder, as the Hugging Face image folder reads
    /// them), captioned by the caption column; a line without one falls back as an image without a caption file does.
    /// </summary>
    private static IEnumerable<ImageItem> ScanMetadata(string metadataPath, string fallbackCaption, int repeats, string concept, bool isPrior, ScanContext scan)
    {
        var folder = Path.GetDirectoryName(metadataPath)!;
        var column = scan.Options.CaptionColumn;
        var entries = new List<(string Path, string? Caption)>();
        var columns = new SortedSet<string>(StringComparer.Ordinal);
        var lineNumber = 0;
        foreach (var line in File.ReadLines(metadataPath))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonElement entry;
            try
            {
                entry = JsonDocument.Parse(line).RootElement;
            }
            catch (JsonException e)
            {
                throw Fail(nameof(DatasetOptions.DataDir), $"'{metadataPath}' line {lineNumber} is not a JSON object: {e.Message}");
            }
            if (entry.ValueKind != JsonValueKind.Object
                || !entry.TryGetProperty("file_name", out var file) || file.ValueKind != JsonValueKind.String)
                throw Fail(nameof(DatasetOptions.DataDir), $"'{metadataPath}' line {lineNumber} has no file_name, which names its image");
            foreach (var property in entry.EnumerateObject()) columns.Add(property.Name);
            var path = Path.GetFullPath(file.GetString()!, folder);
            // A file_name that climbs out of the dataset's folder is not the dataset's.
            if (!path.StartsWith(Path.TrimEndingDirectorySeparator(folder) + Path.DirectorySeparatorChar, StringComparison.Ordinal))
            {
                scan.Skipped.Add(new SkippedFile(path, $"line {lineNumber} of {MetadataFile} names a file outside its folder"));
                continue;
            }
            string? caption = entry.TryGetProperty(column, out var text) && text.ValueKind == JsonValueKind.String ? text.GetString() : null;
            entries.Add((path, caption));
        }
        // The diffusers scripts refuse a caption column the dataset does not have, listing the ones it has.
        if (entries.Count > 0 && !columns.Contains(column))
            throw Fail(nameof(DatasetOptions.CaptionColumn), $"'{column}' is not a column of '{metadataPath}'; its columns are {string.Join(", ", columns)}");
        foreach (var (path, caption) in entries.OrderBy(e => e.Path, StringComparer.Ordinal))
        {
            scan.CancellationToken.ThrowIfCancellationRequested();
            if (!File.Exists(path))
            {
                scan.Skipped.Add(new SkippedFile(path, $"listed in {MetadataFile} but not there"));
                continue;
            }
            if (Item(path, caption, fallbackCaption, repeats, concept, isPrior, scan) is { } item) yield return item;
        }
    }

    private static IEnumerable<ImageItem> ScanImages(string folder, string fallbackCaption, int repeats, string concept, bool isPrior, ScanContext scan)
    {
        var skipped = scan.Skipped;
        foreach (var path in Directory.EnumerateFiles(folder).Order(StringComparer.Ordinal))
        {
            scan.CancellationToken.ThrowIfCancellationRequested();
            var name = Path.GetFileName(path);
            if (name.StartsWith('.')) continue;
            var extension = Path.GetExtension(path);
            if (UnsupportedImageExtensions.Contains(extension))
            {
                skipped.Add(new SkippedFile(path, $"{extension.TrimStart('.').ToUpperInvariant()} images are not read (convert it to PNG, JPEG or WebP)"));
                continue;
            }
            if (!ImageExtensions.Contains(extension)) continue;
            string? caption = null;
            var captionPath = Captions.CaptionPath(path, scan.CaptionExtension);
            if (File.Exists(captionPath))
            {
                try
                {
                    caption = CaptionCheck.Read(captionPath);
                }
                catch (DatasetException e)
                {
                    skipped.Add(new SkippedFile(path, e.Problem));
                    continue;
                }
                catch (DecoderFallbackException)
                {
                    skipped.Add(new SkippedFile(path, $"its caption file '{Path.GetFileName(captionPath)}' is not UTF-8 text"));
                    continue;
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    skipped.Add(new SkippedFile(path, $"its caption file '{Path.GetFileName(captionPath)}' cannot be read: {e.Message}"));
                    continue;
                }
            }
            if (Item(path, caption, fallbackCaption, repeats, concept, isPrior, scan) is { } item) yield return item;
        }
    }

    /// <summary>
    /// The image at <paramref name="path"/> with its caption (or the fallback: its file name with use_filename_as_label,
    /// else the folder's), or null with the reason in the skipped list.
    /// </summary>
    /// <param name="label">The image's own name when its file is not named by it (a Parquet row's stored path), for use_filename_as_label.</param>
    private static ImageItem? Item(string path, string? caption, string fallbackCaption, int repeats, string concept, bool isPrior, ScanContext scan, string? label = null)
    {
        if (CheckImage(path, scan.Options, scan.Skipped) is not { } size) return null;
        var hasCaption = caption is not null;
        caption ??= scan.Options.UseFilenameAsLabel ? label ?? Path.GetFileNameWithoutExtension(path) : fallbackCaption;
        if (CaptionCheck.Problem(caption) is { } problem)
        {
            scan.Skipped.Add(new SkippedFile(path, problem));
            return null;
        }
        return new ImageItem(path, caption, isPrior, concept)
        {
            Width = size.Width,
            Height = size.Height,
            Repeats = isPrior ? 1 : repeats,
            HasCaptionFile = hasCaption,
        };
    }

    /// <summary>The image's size, or null with the reason added to <paramref name="skipped"/>.</summary>
    private static (int Width, int Height)? CheckImage(string path, DatasetOptions options, List<SkippedFile> skipped)
    {
        ImageInfo info;
        try
        {
            info = ImageCodec.Identify(path);
        }
        catch (ImageFormatException e)
        {
            skipped.Add(new SkippedFile(path, e.Problem));
            return null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            skipped.Add(new SkippedFile(path, $"cannot be read: {e.Message}"));
            return null;
        }
        if (info.Width < options.MinImageSide || info.Height < options.MinImageSide)
        {
            skipped.Add(new SkippedFile(path, $"{info.Width}x{info.Height} is smaller than {options.MinImageSide} px on a side"));
            return null;
        }
        if (info.PixelCount > ImageDecodeOptions.DefaultMaxPixels)
        {
            skipped.Add(new SkippedFile(path, $"{info.Width}x{info.Height} is over the decoder's limit of {ImageDecodeOptions.DefaultMaxPixels:N0} pixels"));
            return null;
        }
        if (options.VerifyImages)
        {
            try
            {
                ImageCodec.Load(path);
            }
            catch (ImageFormatException e)
            {
                skipped.Add(new SkippedFile(path, $"corrupt: {e.Problem}"));
                return null;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                skipped.Add(new SkippedFile(path, $"cannot be read: {e.Message}"));
                return null;
            }
        }
        return (info.Width, info.Height);
    }

    /// <summary>A refusal of <paramref name="field"/>: a <see cref="DatasetOptions"/> property or a concepts-list path.</summary>
    private static DatasetException Fail(string field, string problem) => new(field, FieldName(field), problem);

    /// <summary>How users know <paramref name="field"/>: the run.json field of a <see cref="DatasetOptions"/> property; a concepts-list path as it is.</summary>
    private static string FieldName(string field) => field.StartsWith("concepts", StringComparison.Ordinal) || field == "dataset_config" ? field : DatasetOptions.FieldName(field);
}
