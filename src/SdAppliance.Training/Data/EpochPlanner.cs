namespace SdAppliance.Training.Data;

/// <summary>
/// The batches of each epoch of a <see cref="TrainingDataset"/>. Each epoch, every bucket's examples (each image as
/// many times as its repeats) are shuffled and cut into batches, and the batches are shuffled, as kohya does; so a
/// batch holds one bucket's examples only. With class images each batch is followed by as many class examples, one
/// per instance example, from that instance's concept's class images (or every class image when its concept has
/// none), cycled in an order shuffled per epoch, resized to the batch's bucket: the diffusers DreamBooth layout
/// [instance…, class…]. All randomness comes from <see cref="DataRandom"/> seeded by (seed, epoch) for the order and
/// by (seed, epoch, batch, slot) for each example's flip, crop and caption, so any batch can be recomputed alone.
/// </summary>
internal sealed class EpochPlanner(TrainingDataset dataset)
{
    private const ulong OrderTag = 1, PriorTag = 2, ExampleTag = 3;

    public int BatchesPerEpoch(int batchSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        return dataset.Buckets.Sum(b => (BucketExampleCount(b) + batchSize - 1) / batchSize);
    }

    public IEnumerable<IReadOnlyList<TrainingExample>> Batches(int epoch, int batchSize, ulong seed, int skipBatches = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(epoch);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        ArgumentOutOfRangeException.ThrowIfNegative(skipBatches);
        return BatchesCore(epoch, batchSize, seed, skipBatches);
    }

    private int BucketExampleCount((int, int) bucket)
    {
        int count = 0;
        for (int i = 0; i < dataset.Items.Count; i++)
            if (dataset.ItemBuckets[i] == bucket) count += dataset.Items[i].Repeats;
        return count;
    }

    private IEnumerable<IReadOnlyList<TrainingExample>> BatchesCore(int epoch, int batchSize, ulong seed, int skipBatches)
    {
        var plan = PlanEpoch(epoch, batchSize, seed);
        // One class stream per concept that has class images, and one over all of them for concepts without.
        var streams = new Dictionary<int, PriorStream>();
        PriorStream? everyClass = dataset.PriorItems.Count == 0 ? null
            : new PriorStream(Enumerable.Range(0, dataset.PriorItems.Count).ToArray(), DataRandom.Seed(seed, (ulong)epoch, PriorTag, ulong.MaxValue));
        for (int b = 0; b < plan.Count; b++)
        {
            var batch = plan[b];
            var bucket = dataset.ItemBuckets[batch[0]];
            // Class choices are counted for skipped batches too: only index arithmetic, no image is touched.
            int[] prior = everyClass is null ? [] : batch.Select(i => Stream(dataset.ItemConcepts[i]).Next()).ToArray();
            if (b < skipBatches) continue;
            var examples = new List<TrainingExample>(batch.Length + prior.Length);
            for (int s = 0; s < batch.Length; s++)
                examples.Add(MakeExample(dataset.Items[batch[s]], bucket, false, new DataRandom(DataRandom.Seed(seed, (ulong)epoch, ExampleTag, (ulong)b, (ulong)s))));
            for (int s = 0; s < prior.Length; s++)
                examples.Add(MakeExample(dataset.PriorItems[prior[s]], bucket, true, new DataRandom(DataRandom.Seed(seed, (ulong)epoch, ExampleTag, (ulong)b, (ulong)(batch.Length + s)))));
            yield return examples;
        }

        PriorStream Stream(int concept)
        {
            if (dataset.PriorsByConcept[concept].Length == 0) return everyClass!;
            if (!streams.TryGetValue(concept, out var stream))
                streams[concept] = stream = new PriorStream(dataset.PriorsByConcept[concept], DataRandom.Seed(seed, (ulong)epoch, PriorTag, (ulong)concept));
            return stream;
        }
    }

    /// <summary>kohya's epoch order: each bucket's examples shuffled and cut into batches, then the batches shuffled.</summary>
    private List<int[]> PlanEpoch(int epoch, int batchSize, ulong seed)
    {
        var random = new DataRandom(DataRandom.Seed(seed, (ulong)epoch, OrderTag));
        var batches = new List<int[]>();
        foreach (var bucket in dataset.Buckets)
        {
            var examples = new List<int>();
            for (int i = 0; i < dataset.Items.Count; i++)
                if (dataset.ItemBuckets[i] == bucket)
                    for (int r = 0; r < dataset.Items[i].Repeats; r++) examples.Add(i);
            random.Shuffle(examples);
            for (int start = 0; start < examples.Count; start += batchSize)
                batches.Add(examples.GetRange(start, Math.Min(batchSize, examples.Count - start)).ToArray());
        }
        random.Shuffle(batches);
        return batches;
    }

    private TrainingExample MakeExample(ImageItem item, (int Width, int Height) bucket, bool isPrior, DataRandom random)
    {
        var o = dataset.Options;
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
}
