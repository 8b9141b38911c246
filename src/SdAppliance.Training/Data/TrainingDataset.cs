using System.Globalization;
using System.Text;
using SdAppliance.Imaging;

namespace SdAppliance.Training.Data;

/// <summary>
/// The images of a training run, found and checked once by <see cref="Scan"/>, and the batches of each epoch.
/// <para>
/// Folders: a data folder's own images are drawn once per epoch; its kohya <c>N_name</c> sub-folders N times,
/// with <c>name</c> as the caption of their images without a caption file (kohya's <c>class_tokens</c>), the
/// instance prompt otherwise. Images are PNG, JPEG or WebP (told by their bytes); other image files, tiny or
/// corrupt images, and unreadable captions are <see cref="Skipped"/> with the reason. Hidden files and folders
/// (a leading dot, such as the <c>.latents</c> cache) are not looked at.
/// </para>
/// <para>
/// Batches: each epoch, every bucket's examples (each image as many times as its repeats) are shuffled and cut
/// into batches, and the batches are shuffled, as kohya does; so a batch holds one bucket's examples only. With
/// class images each batch is followed by as many class examples, one per instance example, from that
/// instance's concept's class images (or every class image when its concept has none), cycled in an order
/// shuffled per epoch, resized to the batch's bucket: the diffusers DreamBooth layout [instance…, class…].
/// All randomness comes from <see cref="DataRandom"/> seeded by (seed, epoch) for the order and by (seed,
/// epoch, batch, slot) for each example's flip, crop and caption, so any batch can be recomputed alone.
/// </para>
/// </summary>
public sealed class TrainingDataset
{
    /// <summary>Image extensions we decode. The format itself is told from the file's bytes.</summary>
    public static readonly IReadOnlySet<string> ImageExtensions = new HashSet<string>(StringComparer.OrdinalIgnoreCase) { ".png", ".jpg", ".jpeg", ".webp" };

    /// <summary>Image extensions users put in datasets that we do not decode: listed as skipped rather than silently ignored.</summary>
    public static readonly IReadOnlySet<string> UnsupportedImageExtensions = new HashSet<string>(StringComparer.OrdinalIgnoreCase)
    {
        ".bmp", ".gif", ".tif", ".tiff", ".avif", ".heic", ".heif", ".jxl", ".ico", ".psd", ".tga", ".jp2",
    };

    private const ulong OrderTag = 1, PriorTag = 2, ExampleTag = 3;

    private readonly List<ImageItem> items;
    private readonly List<ImageItem> priorItems;
    private readonly (int Width, int Height)[] itemBuckets;
    private readonly int[] itemConcept;
    private readonly int[][] priorByConcept;
    private readonly int[] classImagesFound;
    private readonly List<(int Width, int Height)> buckets;

    private TrainingDataset(DatasetOptions options, List<ConceptSpec> concepts, List<ImageItem> items, int[] itemConcept,
        List<ImageItem> priorItems, int[][] priorByConcept, int[] classImagesFound, List<SkippedFile> skipped, IReadOnlyList<(int, int)> candidates)
    {
        Options = options;
        Concepts = concepts;
        this.items = items;
        this.itemConcept = itemConcept;
        this.priorItems = priorItems;
        this.priorByConcept = priorByConcept;
        this.classImagesFound = classImagesFound;
        Skipped = skipped;
        itemBuckets = items.Select(i => AspectBuckets.Select(candidates, i.Width, i.Height)).ToArray();
        buckets = [.. itemBuckets.Distinct().Order()];
        ExamplesPerEpoch = items.Sum(i => i.Repeats);
    }

    public DatasetOptions Options { get; }

    /// <summary>Every concept: the one of <see cref="DatasetOptions.DataDir"/> first (with the options' prompts and class fields), then the list's, folders made absolute.</summary>
    public IReadOnlyList<ConceptSpec> Concepts { get; }

    /// <summary>Instance images, each listed once (see <see cref="ImageItem.Repeats"/>), concept by concept in path order.</summary>
    public IReadOnlyList<ImageItem> Items => items;

    /// <summary>Class images for prior preservation (at most each concept's num_class_images of them when that is set).</summary>
    public IReadOnlyList<ImageItem> PriorItems => priorItems;

    public IReadOnlyList<SkippedFile> Skipped { get; }

    /// <summary>The buckets that instance images fall in, sorted by (width, height); one (resolution, resolution) bucket without bucketing.</summary>
    public IReadOnlyList<(int Width, int Height)> Buckets => buckets;

    /// <summary>Instance examples per epoch: the sum of every image's repeats.</summary>
    public int ExamplesPerEpoch { get; }

    /// <summary>Whether an image is drawn with the same crop every time, so its latents can be cached (not with random crop, as kohya).</summary>
    public bool LatentsCacheable => Options.CenterCrop;

    /// <summary>The bucket an instance image is trained at.</summary>
    public (int Width, int Height) BucketOf(ImageItem item)
    {
        int index = items.IndexOf(item);
        if (index < 0) throw new ArgumentException($"'{item.Path}' is not an instance image of this dataset", nameof(item));
        return itemBuckets[index];
    }

    /// <summary>
    /// Finds the images and checks them. Options and folders are checked first: a bad value, a missing folder or
    /// a dataset with no usable image is a <see cref="DatasetException"/> naming the option before any image is read.
    /// </summary>
    public static TrainingDataset Scan(DatasetOptions options)
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
        var classFolders = concepts.Where(c => c.Spec.ClassDataDir is not null).Select(c => Path.TrimEndingDirectorySeparator(c.Spec.ClassDataDir!)).ToHashSet(StringComparer.Ordinal);
        for (int c = 0; c < concepts.Count; c++)
        {
            var (spec, _) = concepts[c];
            foreach (var item in ScanFolder(spec.InstanceDataDir, spec.InstancePrompt, spec.Repeats, spec.InstanceDataDir, false, options, captionExtension, classFolders, skipped))
            {
                items.Add(item);
                itemConcept.Add(c);
            }
            var classItems = spec.ClassDataDir is not null && Directory.Exists(spec.ClassDataDir)
                ? ScanFolder(spec.ClassDataDir, spec.ClassPrompt, 1, spec.InstanceDataDir, true, options, captionExtension, classFolders, skipped).ToList()
                : [];
            classFound[c] = classItems.Count;
            // diffusers' DreamBooth uses only the first num_class_images when the folder holds more.
            if (spec.NumClassImages > 0 && classItems.Count > spec.NumClassImages) classItems.RemoveRange(spec.NumClassImages, classItems.Count - spec.NumClassImages);
            priorByConcept[c] = Enumerable.Range(priorItems.Count, classItems.Count).ToArray();
            priorItems.AddRange(classItems);
        }

        if (items.Count == 0)
        {
            var field = options.DataDir is not null ? "DataDir" : "concepts";
            var folders = string.Join(", ", concepts.Select(c => $"'{c.Spec.InstanceDataDir}'"));
            var reasons = skipped.Count == 0 ? "" : $"; skipped: {string.Join("; ", skipped.Take(5).Select(s => $"{Path.GetFileName(s.Path)}: {s.Reason}"))}{(skipped.Count > 5 ? $" and {skipped.Count - 5} more" : "")}";
            throw new DatasetException(field, $"{field}: no usable training images in {folders} (PNG, JPEG or WebP, directly in the folder or in kohya N_name sub-folders){reasons}");
        }
        for (int c = 0; c < concepts.Count; c++)
        {
            var (spec, names) = concepts[c];
            if (spec.ClassDataDir is null) continue;
            int missing = spec.NumClassImages - classFound[c];
            if (missing > 0 && string.IsNullOrWhiteSpace(spec.ClassPrompt))
                throw new DatasetException(names.ClassPrompt, $"{names.ClassPrompt}: {missing} class images are missing from '{spec.ClassDataDir}' and there is no class prompt to generate them with");
            if (spec.NumClassImages == 0 && classFound[c] == 0)
                throw new DatasetException(names.ClassDataDir, $"{names.ClassDataDir}: no usable class images in '{spec.ClassDataDir}' (set {names.NumClassImages} to generate them)");
        }
        return new TrainingDataset(options, [.. concepts.Select(c => c.Spec)], items, [.. itemConcept], priorItems, priorByConcept, classFound, skipped, candidates);
    }

    /// <summary>Batches per epoch: per bucket, ⌈examples / batch size⌉ (the last batch of a bucket may be short, as kohya's).</summary>
    public int BatchesPerEpoch(int batchSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        return buckets.Sum(b => (BucketExampleCount(b) + batchSize - 1) / batchSize);
    }

    /// <summary>
    /// One epoch's batches, deterministic from (seed, epoch): shuffled, each batch within one bucket; with prior
    /// items, each batch holds its instance examples followed by as many class examples, as the reference
    /// DreamBooth script does. <paramref name="skipBatches"/> leaves out the first batches without doing their
    /// work (resume): what follows equals the tail of the full epoch.
    /// </summary>
    public IEnumerable<IReadOnlyList<TrainingExample>> Batches(int epoch, int batchSize, ulong seed, int skipBatches = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(epoch);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        ArgumentOutOfRangeException.ThrowIfNegative(skipBatches);
        return BatchesCore(epoch, batchSize, seed, skipBatches);
    }

    /// <summary>Class images still to generate for prior preservation: per concept, NumClassImages minus the usable images its class folder holds.</summary>
    public IReadOnlyList<(ConceptSpec Concept, int Missing)> MissingClassImages()
    {
        var missing = new List<(ConceptSpec, int)>();
        for (int c = 0; c < Concepts.Count; c++)
        {
            var spec = Concepts[c];
            if (spec.ClassDataDir is not null && spec.NumClassImages > classImagesFound[c]) missing.Add((spec, spec.NumClassImages - classImagesFound[c]));
        }
        return missing;
    }

    private int BucketExampleCount((int, int) bucket)
    {
        int count = 0;
        for (int i = 0; i < items.Count; i++)
            if (itemBuckets[i] == bucket) count += items[i].Repeats;
        return count;
    }

    private IEnumerable<IReadOnlyList<TrainingExample>> BatchesCore(int epoch, int batchSize, ulong seed, int skipBatches)
    {
        var plan = PlanEpoch(epoch, batchSize, seed);
        // One class stream per concept that has class images, and one over all of them for concepts without.
        var streams = new Dictionary<int, PriorStream>();
        PriorStream? everyClass = priorItems.Count == 0 ? null
            : new PriorStream(Enumerable.Range(0, priorItems.Count).ToArray(), DataRandom.Seed(seed, (ulong)epoch, PriorTag, ulong.MaxValue));
        for (int b = 0; b < plan.Count; b++)
        {
            var batch = plan[b];
            var bucket = itemBuckets[batch[0]];
            // Class choices are counted for skipped batches too: only index arithmetic, no image is touched.
            int[] prior = everyClass is null ? [] : batch.Select(i => Stream(itemConcept[i]).Next()).ToArray();
            if (b < skipBatches) continue;
            var examples = new List<TrainingExample>(batch.Length + prior.Length);
            for (int s = 0; s < batch.Length; s++)
                examples.Add(MakeExample(items[batch[s]], bucket, false, new DataRandom(DataRandom.Seed(seed, (ulong)epoch, ExampleTag, (ulong)b, (ulong)s))));
            for (int s = 0; s < prior.Length; s++)
                examples.Add(MakeExample(priorItems[prior[s]], bucket, true, new DataRandom(DataRandom.Seed(seed, (ulong)epoch, ExampleTag, (ulong)b, (ulong)(batch.Length + s)))));
            yield return examples;
        }

        PriorStream Stream(int concept)
        {
            if (priorByConcept[concept].Length == 0) return everyClass!;
            if (!streams.TryGetValue(concept, out var stream))
                streams[concept] = stream = new PriorStream(priorByConcept[concept], DataRandom.Seed(seed, (ulong)epoch, PriorTag, (ulong)concept));
            return stream;
        }
    }

    /// <summary>kohya's epoch order: each bucket's examples shuffled and cut into batches, then the batches shuffled.</summary>
    private List<int[]> PlanEpoch(int epoch, int batchSize, ulong seed)
    {
        var random = new DataRandom(DataRandom.Seed(seed, (ulong)epoch, OrderTag));
        var batches = new List<int[]>();
        foreach (var bucket in buckets)
        {
            var examples = new List<int>();
            for (int i = 0; i < items.Count; i++)
                if (itemBuckets[i] == bucket)
                    for (int r = 0; r < items[i].Repeats; r++) examples.Add(i);
            random.Shuffle(examples);
            for (int start = 0; start < examples.Count; start += batchSize)
                batches.Add(examples.GetRange(start, Math.Min(batchSize, examples.Count - start)).ToArray());
        }
        random.Shuffle(batches);
        return batches;
    }

    private TrainingExample MakeExample(ImageItem item, (int Width, int Height) bucket, bool isPrior, DataRandom random)
    {
        var o = Options;
        var (width, height) = AspectBuckets.CoverSize(item.Width, item.Height, bucket.Width, bucket.Height);
        bool flip = o.FlipAug && random.NextDouble() < 0.5;
        int spareX = width - bucket.Width, spareY = height - bucket.Height;
        // kohya: the centre (rounded down) or, for random crop, randint(0, spare) inclusive, x then y.
        var (left, top) = o.CenterCrop ? (spareX / 2, spareY / 2) : (random.Next(spareX + 1), random.Next(spareY + 1));
        // Class captions are prompts of the class, kept as they are (diffusers' DreamBooth does not augment them).
        string caption = isPrior ? item.Caption : Captions.Process(item.Caption, o.ShuffleCaption, o.KeepTokens, o.CaptionDropoutRate, random);
        return new TrainingExample(item, bucket.Width, bucket.Height, flip, left, top, caption);
    }

    private sealed class PriorStream(int[] indices, ulong seed)
    {
        private readonly int[] order = Shuffled(indices, seed);
        private int next;

        public int Next() => order[next++ % order.Length];

        private static int[] Shuffled(int[] indices, ulong seed)
        {
            var copy = (int[])indices.Clone();
            new DataRandom(seed).Shuffle(copy);
            return copy;
        }
    }

    private sealed record FieldNames(string InstanceDataDir, string ClassDataDir, string ClassPrompt, string NumClassImages, string Repeats);

    private static string CheckOptions(DatasetOptions o)
    {
        if (o.DataDir is null && o.Concepts.Count == 0)
            throw new DatasetException("DataDir", "DataDir: no training data given (a data folder, or a concepts list)");
        if (o.Resolution < 64 || o.Resolution % 8 != 0)
            throw new DatasetException("Resolution", $"Resolution: {o.Resolution} must be at least 64 and a multiple of 8 (the VAE's downscale)");
        if (o.KeepTokens < 0) throw new DatasetException("KeepTokens", $"KeepTokens: {o.KeepTokens} must not be negative");
        if (!(o.CaptionDropoutRate >= 0 && o.CaptionDropoutRate <= 1))
            throw new DatasetException("CaptionDropoutRate", $"CaptionDropoutRate: {o.CaptionDropoutRate} must be between 0 and 1");
        if (o.NumClassImages < 0) throw new DatasetException("NumClassImages", $"NumClassImages: {o.NumClassImages} must not be negative");
        if (o.MinImageSide < 1) throw new DatasetException("MinImageSide", $"MinImageSide: {o.MinImageSide} must be at least 1");
        if (string.IsNullOrWhiteSpace(o.CaptionExtension) || o.CaptionExtension.Trim('.').Length == 0 || o.CaptionExtension.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0)
            throw new DatasetException("CaptionExtension", $"CaptionExtension: '{o.CaptionExtension}' is not a file extension (for example .txt or .caption)");
        if (o.EnableBucket) AdjustedBuckets(o);
        return o.CaptionExtension.StartsWith('.') ? o.CaptionExtension : "." + o.CaptionExtension;
    }

    /// <summary>kohya's bucket list after its adjustment of min/max to multiples of the step (min down, max up), which must bracket the resolution.</summary>
    private static IReadOnlyList<(int, int)> AdjustedBuckets(DatasetOptions o)
    {
        int steps = o.BucketResoSteps;
        if (steps < 8 || steps % 8 != 0)
            throw new DatasetException("BucketResoSteps", $"BucketResoSteps: {steps} must be a positive multiple of 8 (kohya uses 64)");
        int min = o.MinBucketReso - (o.MinBucketReso % steps);
        int max = o.MaxBucketReso % steps == 0 ? o.MaxBucketReso : o.MaxBucketReso + steps - (o.MaxBucketReso % steps);
        if (min < steps)
            throw new DatasetException("MinBucketReso", $"MinBucketReso: {o.MinBucketReso} must be at least BucketResoSteps ({steps})");
        if (min > o.Resolution)
            throw new DatasetException("MinBucketReso", $"MinBucketReso: {o.MinBucketReso} (as a multiple of {steps}: {min}) must not exceed Resolution {o.Resolution}");
        if (max < o.Resolution)
            throw new DatasetException("MaxBucketReso", $"MaxBucketReso: {o.MaxBucketReso} (as a multiple of {steps}: {max}) must not be below Resolution {o.Resolution}");
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
                new FieldNames("DataDir", "ClassDataDir", "ClassPrompt", "NumClassImages", "DataDir")));
        }
        else if (o.ClassDataDir is not null || o.ClassPrompt is not null || o.NumClassImages > 0)
        {
            var field = o.ClassDataDir is not null ? "ClassDataDir" : o.ClassPrompt is not null ? "ClassPrompt" : "NumClassImages";
            throw new DatasetException(field, $"{field}: the class options go with DataDir, which is not set; give class_data_dir, class_prompt and num_class_images in each concept instead");
        }
        for (int i = 0; i < o.Concepts.Count; i++)
        {
            var c = o.Concepts[i];
            string p = $"concepts[{i}]";
            if (string.IsNullOrWhiteSpace(c.InstanceDataDir))
                throw new DatasetException($"{p}.instance_data_dir", $"{p}.instance_data_dir: no folder given");
            concepts.Add((c with
            {
                InstanceDataDir = Path.GetFullPath(c.InstanceDataDir),
                InstancePrompt = c.InstancePrompt ?? o.InstancePrompt,
                ClassDataDir = c.ClassDataDir is null ? null : Path.GetFullPath(c.ClassDataDir),
            }, new FieldNames($"{p}.instance_data_dir", $"{p}.class_data_dir", $"{p}.class_prompt", $"{p}.num_class_images", $"{p}.repeats")));
        }
        foreach (var (spec, names) in concepts)
        {
            if (spec.Repeats < 1) throw new DatasetException(names.Repeats, $"{names.Repeats}: {spec.Repeats} must be at least 1");
            if (spec.NumClassImages < 0) throw new DatasetException(names.NumClassImages, $"{names.NumClassImages}: {spec.NumClassImages} must not be negative");
            if (!Directory.Exists(spec.InstanceDataDir))
                throw new DatasetException(names.InstanceDataDir, $"{names.InstanceDataDir}: folder '{spec.InstanceDataDir}' does not exist");
            if (spec.ClassDataDir is null)
            {
                if (!string.IsNullOrWhiteSpace(spec.ClassPrompt))
                    throw new DatasetException(names.ClassDataDir, $"{names.ClassDataDir}: a class prompt is set ('{spec.ClassPrompt}') but no class data folder to hold the class images");
                if (spec.NumClassImages > 0)
                    throw new DatasetException(names.ClassDataDir, $"{names.ClassDataDir}: {names.NumClassImages} is {spec.NumClassImages} but no class data folder is set");
            }
            // A class folder may be missing only when its images are still to be generated into it.
            else if (!Directory.Exists(spec.ClassDataDir) && spec.NumClassImages == 0)
            {
                throw new DatasetException(names.ClassDataDir, $"{names.ClassDataDir}: folder '{spec.ClassDataDir}' does not exist (set {names.NumClassImages} to generate class images into it)");
            }
        }
        return concepts;
    }

    /// <summary>A folder's own images, then those of its kohya <c>N_name</c> sub-folders (N repeats, <c>name</c> as fallback caption).</summary>
    private static IEnumerable<ImageItem> ScanFolder(string folder, string? prompt, int repeats, string concept, bool isPrior,
        DatasetOptions options, string captionExtension, IReadOnlySet<string> classFolders, List<SkippedFile> skipped)
    {
        foreach (var item in ScanImages(folder, prompt ?? "", repeats, concept, isPrior, options, captionExtension, skipped))
            yield return item;
        foreach (var sub in Directory.EnumerateDirectories(folder).Order(StringComparer.Ordinal))
        {
            var name = Path.GetFileName(sub);
            if (name.StartsWith('.') || classFolders.Contains(Path.TrimEndingDirectorySeparator(Path.GetFullPath(sub)))) continue;
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
            foreach (var item in ScanImages(sub, fallback, repeats * count.Value, concept, isPrior, options, captionExtension, skipped))
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

    private static IEnumerable<ImageItem> ScanImages(string folder, string fallbackCaption, int repeats, string concept, bool isPrior,
        DatasetOptions options, string captionExtension, List<SkippedFile> skipped)
    {
        foreach (var path in Directory.EnumerateFiles(folder).Order(StringComparer.Ordinal))
        {
            var name = Path.GetFileName(path);
            if (name.StartsWith('.')) continue;
            var extension = Path.GetExtension(path);
            if (UnsupportedImageExtensions.Contains(extension))
            {
                skipped.Add(new SkippedFile(path, $"{extension.TrimStart('.').ToUpperInvariant()} images are not read (convert it to PNG, JPEG or WebP)"));
                continue;
            }
            if (!ImageExtensions.Contains(extension)) continue;
            var item = CheckImage(path, options, skipped);
            if (item is not { } size) continue;
            string caption = fallbackCaption;
            bool hasCaption = false;
            var captionPath = Captions.CaptionPath(path, captionExtension);
            if (File.Exists(captionPath))
            {
                try
                {
                    caption = Captions.Read(captionPath);
                    hasCaption = true;
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
            yield return new ImageItem(path, caption, isPrior, concept)
            {
                Width = size.Width,
                Height = size.Height,
                Repeats = isPrior ? 1 : repeats,
                HasCaptionFile = hasCaption,
            };
        }
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
}
