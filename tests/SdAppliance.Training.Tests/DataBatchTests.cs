using SdAppliance.Training.Data;

namespace SdAppliance.Training.Tests;

public sealed class DataBatchTests
{
    private static TrainingDataset Dataset(DataTestFolder folder, DatasetOptions? options = null)
    {
        for (int i = 0; i < 5; i++) folder.Image($"data/{i}.png", 64 + (16 * i), 64);
        for (int i = 0; i < 3; i++) folder.Image($"data/2_twice/{i}.png", 64, 64 + (8 * i));
        return TrainingDataset.Scan((options ?? new DatasetOptions()) with
        {
            DataDir = folder.PathOf("data"), InstancePrompt = "tag a, tag b, tag c, tag d", Resolution = 64,
            CenterCrop = false, FlipAug = true, ShuffleCaption = true,
        });
    }

    [Fact]
    public void AnEpochDrawsEveryImageItsRepeatsTimes()
    {
        using var folder = new DataTestFolder();
        var dataset = Dataset(folder);
        Assert.Equal(5 + 6, dataset.ExamplesPerEpoch);
        Assert.Equal(4, dataset.BatchesPerEpoch(3));
        var batches = dataset.Batches(0, 3, seed: 42).ToList();
        Assert.Equal(4, batches.Count);
        Assert.Equal([2, 3, 3, 3], batches.Select(b => b.Count).Order());
        var counts = batches.SelectMany(b => b).GroupBy(e => e.Item).ToDictionary(g => g.Key, g => g.Count());
        Assert.All(dataset.Items, i => Assert.Equal(i.Repeats, counts[i]));
    }

    [Fact]
    public void BatchesAreDeterministicFromSeedAndEpoch()
    {
        using var folder = new DataTestFolder();
        var dataset = Dataset(folder);
        var first = dataset.Batches(3, 2, seed: 7).SelectMany(b => b).ToList();
        Assert.Equal(first, dataset.Batches(3, 2, seed: 7).SelectMany(b => b).ToList());
        // A fresh scan of the same folder gives the same epoch too (what a resumed process sees).
        Assert.Equal(first, TrainingDataset.Scan(dataset.Options).Batches(3, 2, 7).SelectMany(b => b).ToList());
        // 11 examples with random order, crop, flip and tag order: another epoch or seed differs somewhere.
        Assert.NotEqual(first, dataset.Batches(4, 2, seed: 7).SelectMany(b => b).ToList());
        Assert.NotEqual(first, dataset.Batches(3, 2, seed: 8).SelectMany(b => b).ToList());
        Assert.Contains(first, e => e.Flip);
        Assert.Contains(first, e => !e.Flip);
    }

    [Fact]
    public void SkippingBatchesGivesTheTailOfTheFullEpoch()
    {
        using var folder = new DataTestFolder();
        var dataset = Dataset(folder);
        var full = dataset.Batches(2, 2, seed: 11).ToList();
        for (int skip = 0; skip <= full.Count + 1; skip++)
        {
            var tail = dataset.Batches(2, 2, seed: 11, skipBatches: skip).ToList();
            Assert.Equal(full.Skip(skip).Select(b => b.ToList()), tail.Select(b => b.ToList()));
        }
    }

    [Fact]
    public void WithoutFlipAugNothingIsMirrored()
    {
        using var folder = new DataTestFolder();
        var dataset = TrainingDataset.Scan(Dataset(folder).Options with { FlipAug = false });
        Assert.All(Enumerable.Range(0, 5).SelectMany(e => dataset.Batches(e, 4, 1)).SelectMany(b => b), e => Assert.False(e.Flip));
    }

    [Fact]
    public void PriorBatchesHoldInstanceExamplesThenAsManyClassExamplesOfTheirConcept()
    {
        using var folder = new DataTestFolder();
        for (int i = 0; i < 3; i++) folder.Image($"dog/{i}.png", 64, 64);
        for (int i = 0; i < 2; i++) folder.Image($"dog_class/{i}.png", 64, 64);
        for (int i = 0; i < 4; i++) folder.Image($"cat/{i}.png", 192, 64);
        for (int i = 0; i < 5; i++) folder.Image($"cat_class/{i}.png", 64, 128);
        folder.Image("plain/0.png", 64, 64);
        var dataset = TrainingDataset.Scan(new DatasetOptions
        {
            // Buckets at 128 from 64 to 256: (64,192), (64,256), (128,128), (192,64), (256,64).
            Resolution = 128, EnableBucket = true, MinBucketReso = 64, MaxBucketReso = 256, FlipAug = true,
            Concepts =
            [
                new ConceptSpec(folder.PathOf("dog"), "sks dog", "dog", folder.PathOf("dog_class"), Repeats: 2),
                new ConceptSpec(folder.PathOf("cat"), "zwx cat", "cat", folder.PathOf("cat_class")),
                new ConceptSpec(folder.PathOf("plain"), "plain"),
            ],
        });
        Assert.Equal(7, dataset.PriorItems.Count);
        var batches = dataset.Batches(0, 2, seed: 3).ToList();
        Assert.Equal(dataset.BatchesPerEpoch(2), batches.Count);
        var classUses = new Dictionary<ImageItem, int>();
        foreach (var batch in batches)
        {
            int n = batch.Count / 2;
            Assert.Equal(2 * n, batch.Count);
            Assert.All(batch.Take(n), e => Assert.False(e.Item.IsPrior));
            Assert.All(batch.Skip(n), e => Assert.True(e.Item.IsPrior));
            // Class images are cut to the batch's bucket, whatever their own shape.
            Assert.Single(batch.Select(e => (e.BucketWidth, e.BucketHeight)).Distinct());
            for (int s = 0; s < n; s++)
            {
                var instance = batch[s].Item;
                var prior = batch[n + s].Item;
                // The instance's own class images; the plain concept has none, so any class image serves.
                if (instance.Concept != folder.PathOf("plain")) Assert.Equal(instance.Concept, prior.Concept);
                classUses[prior] = classUses.GetValueOrDefault(prior) + 1;
            }
        }
        // Dog: 6 draws over 2 class images cycle 3 times each, plus possibly one from plain's draw.
        var dogUses = dataset.PriorItems.Where(p => p.Concept == folder.PathOf("dog")).Select(p => classUses.GetValueOrDefault(p)).ToList();
        Assert.True(dogUses.Min() >= 3 && dogUses.Max() <= 4, string.Join(",", dogUses));
        // Cat: 4 draws over 5 images: no image twice (plus possibly one from plain's draw).
        Assert.True(dataset.PriorItems.Where(p => p.Concept == folder.PathOf("cat")).All(p => classUses.GetValueOrDefault(p) <= 2));
        Assert.Equal(2 * 3 + 4 + 1, classUses.Values.Sum());
        // In the wide (192x64) bucket a tall 64x128 class image is scaled to cover it (192x384) and its middle cut out.
        var wide = batches.First(b => b[0].BucketWidth == 192);
        var tallClass = wide.First(e => e.Item.IsPrior);
        Assert.Equal((192, 64, 0, 160), (tallClass.BucketWidth, tallClass.BucketHeight, tallClass.CropLeft, tallClass.CropTop));
    }
}
