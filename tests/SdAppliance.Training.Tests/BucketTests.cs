using SdAppliance.Training.Data;

namespace SdAppliance.Training.Tests;

public sealed class BucketTests
{
    /// <summary>
    /// By hand from kohya's formula, area 512² = 262144, steps 64, sides 256..1024: the square 512, and for
    /// width w the height min(1024, ⌊⌊262144 / w⌋ / 64⌋·64): 256→1024, 320→768 (819), 384→640 (682),
    /// 448→576 (585), 512→512, 576→448, 640→384, 704→320 (372), 768→320 (341), 832→256 (315), 896→256,
    /// 960→256, 1024→256; both orientations, sorted.
    /// </summary>
    [Fact]
    public void BucketsFor512FollowKohyasFormula()
    {
        (int, int)[] expected =
        [
            (256, 832), (256, 896), (256, 960), (256, 1024), (320, 704), (320, 768), (384, 640), (448, 576), (512, 512),
            (576, 448), (640, 384), (704, 320), (768, 320), (832, 256), (896, 256), (960, 256), (1024, 256),
        ];
        Assert.Equal(expected, AspectBuckets.MakeBucketResolutions(512, 512));
    }

    [Fact]
    public void BucketsFor768WithNarrowLimits()
    {
        // area 589824; widths 512..896: 512→1152 capped to 896, 576→1024→896, 640→896 (921), 704→832 (837),
        // 768→768, 832→704 (708), 896→640 (658).
        (int, int)[] expected =
        [
            (512, 896), (576, 896), (640, 896), (704, 832), (768, 768), (832, 704), (896, 512), (896, 576), (896, 640),
        ];
        Assert.Equal(expected, AspectBuckets.MakeBucketResolutions(768, 768, 512, 896, 64));
    }

    [Theory]
    [InlineData(1000, 600, 640, 384)]   // aspect 1.667 is exactly 640/384
    [InlineData(512, 512, 512, 512)]
    [InlineData(4000, 4000, 512, 512)]
    [InlineData(448, 576, 448, 576)]    // its own size is a bucket
    [InlineData(300, 1200, 256, 1024)]  // 0.25: the tallest bucket
    [InlineData(2000, 100, 1024, 256)]  // 20: nothing wider than 4 exists
    [InlineData(700, 1000, 448, 576)]   // 0.7: 448/576 = 0.778 (0.078 off) beats 384/640 = 0.6 (0.1 off)
    public void ImagesGoToTheBucketOfNearestAspect(int width, int height, int bucketWidth, int bucketHeight)
    {
        var buckets = AspectBuckets.MakeBucketResolutions(512, 512);
        Assert.Equal((bucketWidth, bucketHeight), AspectBuckets.Select(buckets, width, height));
    }

    [Theory]
    [InlineData(1000, 600, 640, 384, 640, 384)]
    [InlineData(600, 1000, 512, 512, 512, 853)]   // scaled to the width: 1000·512/600 = 853.3
    [InlineData(1000, 600, 512, 512, 853, 512)]   // wider than the bucket: scaled to the height
    [InlineData(96, 64, 64, 64, 96, 64)]          // no scaling needed
    [InlineData(32, 40, 64, 64, 64, 80)]          // upscaled to cover
    public void ImagesAreResizedToCoverTheirBucket(int width, int height, int bucketWidth, int bucketHeight, int coverWidth, int coverHeight)
    {
        Assert.Equal((coverWidth, coverHeight), AspectBuckets.CoverSize(width, height, bucketWidth, bucketHeight));
    }

    [Fact]
    public void DatasetBucketsHoldTheirImagesAndBatchesStayWithinOne()
    {
        using var folder = new DataTestFolder();
        // At resolution 128 (area 16384, steps 64, sides 64..256) kohya's buckets are (64,192), (64,256), (128,128),
        // (192,64), (256,64); wide2's aspect 3.57 is nearer 4 than 3, tall's 0.267 nearer 0.25 than 0.333.
        folder.Image("wide1.png", 256, 64);
        folder.Image("wide2.png", 250, 70);
        folder.Image("square1.png", 100, 100);
        folder.Image("square2.png", 130, 120);
        folder.Image("square3.png", 64, 64);
        folder.Image("tall.png", 64, 240);
        var dataset = TrainingDataset.Scan(new DatasetOptions
        {
            DataDir = folder.Root, InstancePrompt = "x", Resolution = 128, EnableBucket = true, MinBucketReso = 64, MaxBucketReso = 256,
        });
        Assert.Equal([(64, 256), (128, 128), (256, 64)], dataset.Buckets);
        Assert.Equal((256, 64), dataset.BucketOf(dataset.Items.Single(i => i.Path.EndsWith("wide2.png"))));
        Assert.Equal((128, 128), dataset.BucketOf(dataset.Items.Single(i => i.Path.EndsWith("square2.png"))));
        Assert.Equal((64, 256), dataset.BucketOf(dataset.Items.Single(i => i.Path.EndsWith("tall.png"))));

        // Batch size 2: wide 1 batch, square 2 (2 + 1), tall 1.
        Assert.Equal(4, dataset.BatchesPerEpoch(2));
        var batches = dataset.Batches(0, 2, seed: 5).ToList();
        Assert.Equal(4, batches.Count);
        foreach (var batch in batches)
        {
            Assert.Single(batch.Select(e => (e.BucketWidth, e.BucketHeight)).Distinct());
            foreach (var e in batch) Assert.Equal(dataset.BucketOf(e.Item), (e.BucketWidth, e.BucketHeight));
        }
    }

    [Fact]
    public void WithoutBucketingEveryImageIsCoveredAndCenterCroppedToTheResolution()
    {
        using var folder = new DataTestFolder();
        folder.Image("a.png", 97, 64);
        folder.Image("b.png", 64, 161);
        var dataset = TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root, Resolution = 64 });
        Assert.Equal([(64, 64)], dataset.Buckets);
        var examples = dataset.Batches(0, 1, seed: 1).SelectMany(b => b).ToDictionary(e => Path.GetFileName(e.Item.Path));
        // 97x64 covers 64x64 as is: 33 spare columns, 16 (rounded down, as kohya) on the left. 64x161: 97 spare rows.
        Assert.Equal((16, 0), (examples["a.png"].CropLeft, examples["a.png"].CropTop));
        Assert.Equal((0, 48), (examples["b.png"].CropLeft, examples["b.png"].CropTop));
    }

    [Fact]
    public void RandomCropStaysInsideTheImageAndVariesWithTheEpoch()
    {
        using var folder = new DataTestFolder();
        folder.Image("a.png", 200, 64);
        var dataset = TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root, Resolution = 64, CenterCrop = false });
        Assert.False(dataset.LatentsCacheable);
        var lefts = Enumerable.Range(0, 40).Select(epoch => dataset.Batches(epoch, 1, seed: 3).Single().Single()).ToList();
        Assert.All(lefts, e => Assert.InRange(e.CropLeft, 0, 136));
        Assert.All(lefts, e => Assert.Equal(0, e.CropTop));
        // 40 draws from 137 offsets: all equal would have probability 137^-39.
        Assert.True(lefts.Select(e => e.CropLeft).Distinct().Count() > 10);
        Assert.Equal(lefts[7], dataset.Batches(7, 1, seed: 3).Single().Single());
    }

    [Fact]
    public void BucketLimitsAreAdjustedToStepsAndMustBracketTheResolution()
    {
        using var folder = new DataTestFolder();
        folder.Image("a.png", 64, 64);
        // 300 rounds down to 256 and 1000 up to 1024, as kohya adjusts them.
        var adjusted = TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root, EnableBucket = true, MinBucketReso = 300, MaxBucketReso = 1000 });
        Assert.Equal([(512, 512)], adjusted.Buckets);
        var tooLarge = Assert.Throws<DatasetException>(() => TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root, EnableBucket = true, MinBucketReso = 576 }));
        Assert.Equal("MinBucketReso", tooLarge.Field);
        var tooSmall = Assert.Throws<DatasetException>(() => TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root, EnableBucket = true, MaxBucketReso = 448 }));
        Assert.Equal("MaxBucketReso", tooSmall.Field);
        var steps = Assert.Throws<DatasetException>(() => TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root, EnableBucket = true, BucketResoSteps = 12 }));
        Assert.Equal("BucketResoSteps", steps.Field);
    }
}
