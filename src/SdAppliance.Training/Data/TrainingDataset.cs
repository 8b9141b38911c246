namespace SdAppliance.Training.Data;

/// <summary>
/// The images of a training run as <see cref="Scan"/> found and checked them (<see cref="DatasetScanner"/>: folders,
/// captions, skipped files with reasons), and the batches of each epoch (<see cref="EpochPlanner"/>: kohya's bucketed
/// order, DreamBooth class images, flips, crops and caption augmentation, all recomputable from the seed).
/// </summary>
public sealed class TrainingDataset
{
    private readonly EpochPlanner planner;

    internal TrainingDataset(DatasetOptions options, IReadOnlyList<ConceptSpec> concepts, IReadOnlyList<ImageItem> items, IReadOnlyList<int> itemConcepts,
        IReadOnlyList<ImageItem> priorItems, IReadOnlyList<int[]> priorsByConcept, IReadOnlyList<int> classImagesFound, IReadOnlyList<SkippedFile> skipped,
        IReadOnlyList<(int Width, int Height)> candidateBuckets)
    {
        Options = options;
        Concepts = concepts;
        Items = items;
        ItemConcepts = itemConcepts;
        PriorItems = priorItems;
        PriorsByConcept = priorsByConcept;
        ClassImagesFound = classImagesFound;
        Skipped = skipped;
        ItemBuckets = [.. items.Select(i => AspectBuckets.Select(candidateBuckets, i.Width, i.Height))];
        Buckets = [.. ItemBuckets.Distinct().Order()];
        ExamplesPerEpoch = items.Sum(i => i.Repeats);
        planner = new EpochPlanner(this);
    }

    /// <summary>
    /// Finds the images and checks them. Options and folders are checked first: a bad value, a missing folder or
    /// a dataset with no usable image is a <see cref="DatasetException"/> naming the option before any image is read.
    /// </summary>
    public static TrainingDataset Scan(DatasetOptions options, CancellationToken cancellationToken = default) =>
        DatasetScanner.Scan(options, cancellationToken);

    public DatasetOptions Options { get; }

    /// <summary>Every concept: the one of <see cref="DatasetOptions.DataDir"/> first (with the options' prompts and class fields), then the list's, folders made absolute.</summary>
    public IReadOnlyList<ConceptSpec> Concepts { get; }

    /// <summary>Instance images, each listed once (see <see cref="ImageItem.Repeats"/>), concept by concept in path order.</summary>
    public IReadOnlyList<ImageItem> Items { get; }

    /// <summary>Class images for prior preservation (at most each concept's num_class_images of them when that is set).</summary>
    public IReadOnlyList<ImageItem> PriorItems { get; }

    public IReadOnlyList<SkippedFile> Skipped { get; }

    /// <summary>The buckets that instance images fall in, sorted by (width, height); one (resolution, resolution) bucket without bucketing.</summary>
    public IReadOnlyList<(int Width, int Height)> Buckets { get; }

    /// <summary>Instance examples per epoch: the sum of every image's repeats.</summary>
    public int ExamplesPerEpoch { get; }

    /// <summary>Whether an image is drawn with the same crop every time, so its latents can be cached (not with random crop, as kohya).</summary>
    public bool LatentsCacheable => Options.CenterCrop;

    /// <summary>The concept (index into <see cref="Concepts"/>) of each of <see cref="Items"/>.</summary>
    internal IReadOnlyList<int> ItemConcepts { get; }

    /// <summary>The bucket of each of <see cref="Items"/>.</summary>
    internal IReadOnlyList<(int Width, int Height)> ItemBuckets { get; }

    /// <summary>Per concept, the indices into <see cref="PriorItems"/> of its class images.</summary>
    internal IReadOnlyList<int[]> PriorsByConcept { get; }

    /// <summary>Per concept, the usable images its class folder held (before the num_class_images cap).</summary>
    internal IReadOnlyList<int> ClassImagesFound { get; }

    /// <summary>The bucket an instance image is trained at.</summary>
    public (int Width, int Height) BucketOf(ImageItem item)
    {
        for (int i = 0; i < Items.Count; i++)
            if (Items[i] == item) return ItemBuckets[i];
        throw new ArgumentException($"'{item.Path}' is not an instance image of this dataset", nameof(item));
    }

    /// <summary>Batches per epoch: per bucket, ⌈examples / batch size⌉ (the last batch of a bucket may be short, as kohya's).</summary>
    public int BatchesPerEpoch(int batchSize) => planner.BatchesPerEpoch(batchSize);

    /// <summary>
    /// One epoch's batches, deterministic from (seed, epoch): shuffled, each batch within one bucket; with prior
    /// items, each batch holds its instance examples followed by as many class examples, as the reference
    /// DreamBooth script does. <paramref name="skipBatches"/> leaves out the first batches without doing their
    /// work (resume): what follows equals the tail of the full epoch.
    /// </summary>
    public IEnumerable<IReadOnlyList<TrainingExample>> Batches(int epoch, int batchSize, ulong seed, int skipBatches = 0) =>
        planner.Batches(epoch, batchSize, seed, skipBatches);

    /// <summary>Class images still to generate for prior preservation: per concept, NumClassImages minus the usable images its class folder holds.</summary>
    public IReadOnlyList<(ConceptSpec Concept, int Missing)> MissingClassImages()
    {
        var missing = new List<(ConceptSpec, int)>();
        for (int c = 0; c < Concepts.Count; c++)
        {
            var spec = Concepts[c];
            if (spec.ClassDataDir is not null && spec.NumClassImages > ClassImagesFound[c]) missing.Add((spec, spec.NumClassImages - ClassImagesFound[c]));
        }
        return missing;
    }
}
