using SdAppliance.Models.Loading;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Vae;
using SdAppliance.Torch;
using SdAppliance.Training.Data;

namespace SdAppliance.Training.Tests;

public sealed class TinyVaeFixture : IDisposable
{
    private readonly StableDiffusionModel model = ModelLoader.Load(Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sd"));

    public AutoencoderKL Vae => model.Vae;

    public void Dispose() => model.Dispose();
}

public sealed class LatentCacheTests(TinyVaeFixture fixture) : IClassFixture<TinyVaeFixture>
{
    private readonly AutoencoderKL vae = fixture.Vae;

    private static (TrainingDataset Dataset, TrainingExample A, TrainingExample B) TwoImages(DataTestFolder folder, bool flip = false)
    {
        folder.Image("a.png", 97, 64);
        folder.Image("b.png", 64, 64, shift: 100);
        var dataset = TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root, InstancePrompt = "x", Resolution = 64 });
        var examples = dataset.Batches(0, 1, seed: 1).SelectMany(b => b).Select(e => e with { Flip = flip }).OrderBy(e => e.Item.Path, StringComparer.Ordinal).ToList();
        return (dataset, examples[0], examples[1]);
    }

    [Fact]
    public void PixelsAreTheCropWindowInMinusOneToOneAndMirroredWhenAsked()
    {
        using var folder = new DataTestFolder();
        var (_, a, _) = TwoImages(folder);
        Assert.Equal((16, 0), (a.CropLeft, a.CropTop));
        using var pixels = LatentCache.LoadPixels(a);
        Assert.Equal([1L, 3, 64, 64], pixels.Shape);
        using var flipped = LatentCache.LoadPixels(a with { Flip = true });
        var values = pixels.ToArray<float>();
        var mirrored = flipped.ToArray<float>();
        // No resize happens (97x64 already covers 64x64), so each value is byte/127.5 − 1 of the pattern:
        // red = x + 16 at column x of the crop, exact up to float32 rounding of the division (~1e-7).
        for (int y = 0; y < 64; y += 9)
            for (int x = 0; x < 64; x++)
            {
                Assert.Equal(((x + 16) / 127.5) - 1, values[(y * 64) + x], 1e-6);
                Assert.Equal(((63 - x + 16) / 127.5) - 1, mirrored[(y * 64) + x], 1e-6);
                Assert.Equal((y / 127.5) - 1, values[(64 * 64) + (y * 64) + x], 1e-6);
            }

        folder.Image("big.png", 256, 200);
        var big = new TrainingExample(new ImageItem(folder.PathOf("big.png"), "", false, folder.Root) { Width = 256, Height = 200 }, 64, 64, false, 9, 0, "");
        using var resized = LatentCache.LoadPixels(big);
        Assert.Equal([1L, 3, 64, 64], resized.Shape);
    }

    [Fact]
    public void LatentsAreTheScaledPosteriorMeanComputedOnceInMemory()
    {
        using var folder = new DataTestFolder();
        var (_, a, b) = TwoImages(folder);
        using var cache = new LatentCache(vae, "tiny-vae", onDisk: false);
        using var first = cache.Get(a);
        using var again = cache.Get(a);
        using var other = cache.Get(b);
        Assert.Equal((2, 1, 0), (cache.Computed, cache.MemoryHits, cache.DiskHits));
        Assert.Equal([1L, 4, 8, 8], first.Shape);
        Assert.Equal(first.ToArray<float>(), again.ToArray<float>());
        Assert.NotEqual(first.ToArray<float>(), other.ToArray<float>());
        Assert.False(Directory.Exists(folder.PathOf(LatentCache.FolderName)));

        using var pixels = LatentCache.LoadPixels(a);
        float[] expected;
        using (Autograd.NoGrad())
        using (var posterior = vae.Encode(pixels))
        using (var scaled = posterior.Mean.Mul(0.18215))
            expected = scaled.ToArray<float>();
        // The same ops on the same input: equal up to float32 rounding of the last multiply.
        var actual = first.ToArray<float>();
        for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], actual[i], 1e-6 * Math.Max(1, Math.Abs(expected[i])));

        // The returned tensor is the caller's: changing it leaves the cache alone.
        first.Mul_(0);
        using var third = cache.Get(a);
        Assert.Equal(again.ToArray<float>(), third.ToArray<float>());
    }

    [Fact]
    public void DiskCacheIsReusedUntilTheImageOrVaeChanges()
    {
        using var folder = new DataTestFolder();
        var (dataset, a, _) = TwoImages(folder);
        float[] stored;
        using (var cache = new LatentCache(vae, "tiny-vae", onDisk: true))
        {
            using var latents = cache.Get(a);
            stored = latents.ToArray<float>();
            Assert.Equal(1, cache.Computed);
            Assert.True(File.Exists(cache.CachePath(a)));
            Assert.Equal(folder.PathOf(LatentCache.FolderName), Path.GetDirectoryName(cache.CachePath(a)));
        }

        // A new process (a new cache) finds the file: bit-identical, the VAE not run.
        using (var cache = new LatentCache(vae, "tiny-vae", onDisk: true))
        {
            using var latents = cache.Get(a);
            Assert.Equal((0, 1), (cache.Computed, cache.DiskHits));
            Assert.Equal(stored, latents.ToArray<float>());
        }

        // The cache folder is hidden from the dataset.
        var rescanned = TrainingDataset.Scan(dataset.Options);
        Assert.Equal(dataset.Items, rescanned.Items);
        Assert.Empty(rescanned.Skipped);

        // Another VAE does not reuse the file.
        using (var cache = new LatentCache(vae, "another-vae", onDisk: true))
        {
            using var latents = cache.Get(a);
            Assert.Equal((1, 0), (cache.Computed, cache.DiskHits));
        }

        // Editing the image invalidates both the file and what a running cache holds in memory.
        using var running = new LatentCache(vae, "tiny-vae", onDisk: true);
        using (running.Get(a)) Assert.Equal(1, running.DiskHits);
        folder.Image("a.png", 97, 64, shift: 60);
        File.SetLastWriteTimeUtc(a.Item.Path, DateTime.UtcNow.AddMinutes(1));
        using (var latents = running.Get(a))
        {
            Assert.Equal((1, 1, 0), (running.Computed, running.DiskHits, running.MemoryHits));
            Assert.NotEqual(stored, latents.ToArray<float>());
        }
        using (var cache = new LatentCache(vae, "tiny-vae", onDisk: true))
        {
            using var latents = cache.Get(a);
            Assert.Equal((0, 1), (cache.Computed, cache.DiskHits));
        }

        // A damaged cache file is a miss, not an error.
        File.WriteAllBytes(running.CachePath(a), [1, 2, 3]);
        using (var cache = new LatentCache(vae, "tiny-vae", onDisk: true))
        {
            using var latents = cache.Get(a);
            Assert.Equal((1, 0), (cache.Computed, cache.DiskHits));
        }
    }

    [Fact]
    public void SampledLatentsDependOnTheSeedButNotOnTheOrderImagesAreMet()
    {
        using var folder = new DataTestFolder();
        var (_, a, b) = TwoImages(folder, flip: true);
        using var seedFive = new Generator(5);
        using var forward = new LatentCache(vae, "tiny-vae", onDisk: false, seedFive);
        using var backward = new LatentCache(vae, "tiny-vae", onDisk: false, seedFive);
        using var mean = new LatentCache(vae, "tiny-vae", onDisk: false);
        using var seedSix = new Generator(6);
        using var other = new LatentCache(vae, "tiny-vae", onDisk: false, seedSix);

        using var fa = forward.Get(a);
        using var fb = forward.Get(b);
        using var bb = backward.Get(b);
        using var ba = backward.Get(a);
        Assert.Equal(fa.ToArray<float>(), ba.ToArray<float>());
        Assert.Equal(fb.ToArray<float>(), bb.ToArray<float>());
        using var ma = mean.Get(a);
        using var oa = other.Get(a);
        Assert.NotEqual(ma.ToArray<float>(), fa.ToArray<float>());
        Assert.NotEqual(oa.ToArray<float>(), fa.ToArray<float>());
    }

    /// <summary>Three images of different sizes at 64x64 (two of them larger, so a random crop has windows to choose from), flips on.</summary>
    private static TrainingConfig ThreeImages(DataTestFolder folder, bool centerCrop)
    {
        folder.Image("a.png", 97, 64);
        folder.Image("b.png", 80, 120, shift: 50);
        folder.Image("c.png", 64, 64, shift: 100);
        return new TrainingConfig { Data = folder.Root, InstancePrompt = "x", Resolution = 64, CenterCrop = centerCrop, FlipAug = true };
    }

    /// <summary>The examples of 2,000 optimizer steps at batch 1 (one draw a step), epoch after epoch, as the trainer draws them.</summary>
    private static IEnumerable<TrainingExample> Draws(TrainingDataset dataset, int steps = 2000) =>
        Enumerable.Range(0, int.MaxValue).SelectMany(epoch => dataset.Batches(epoch, 1, seed: 42)).SelectMany(b => b).Take(steps);

    [Fact]
    public void ARandomCropRunCachesNothingAndACenterCropRunStaysBoundedOver2000Steps()
    {
        using var folder = new DataTestFolder();
        var random = ThreeImages(folder, centerCrop: false);
        var randomSet = TrainingDataset.Scan(DatasetOptions.Of(random));
        // What an unbounded cache would have kept: every (window, flip) drawn is a new entry.
        var windows = Draws(randomSet).Select(e => (e.Item.Path, e.CropLeft, e.CropTop, e.Flip)).Distinct().Count();
        Assert.True(windows > 50, $"only {windows} distinct windows in 2,000 random-crop draws");
        Assert.Null(LatentCache.ForRun(random, vae));

        var centered = random with { CenterCrop = true };
        using var cache = LatentCache.ForRun(centered, vae);
        Assert.NotNull(cache);
        foreach (var example in Draws(TrainingDataset.Scan(DatasetOptions.Of(centered))))
            cache.Get(example).Dispose();
        // One entry per image and flip, however long the run: 3 images x 2 = 6 latents of [1, 4, 8, 8] float32 (1,024 bytes each).
        Assert.Equal(6, cache.Count);
        Assert.Equal(6, cache.Computed);
        Assert.Equal(2000 - 6, cache.MemoryHits);
        Assert.Equal(6 * 4 * 8 * 8 * sizeof(float), cache.Bytes);
    }

    [Fact]
    public void CachingARandomCropIsRefusedNamingTheFieldsAsKohyaDoes()
    {
        var config = new TrainingConfig { Data = "data", Output = "run", CenterCrop = false };
        config.Validate();  // the default caches only what it can
        Assert.False(config.CachesLatents());
        var error = Assert.Throws<TrainingConfigException>(() => (config with { CacheLatents = true }).Validate());
        Assert.StartsWith("cache_latents: ", error.Message);
        Assert.Contains("center_crop", error.Message);
        Assert.StartsWith("cache_latents_to_disk: ", Assert.Throws<TrainingConfigException>(() => (config with { CacheLatentsToDisk = true }).Validate()).Message);
        Assert.True((config with { CenterCrop = true }).CachesLatents());
        Assert.False((config with { CenterCrop = true, CacheLatents = false }).CachesLatents());
    }

    [Fact]
    public void TheDiskCacheKnowsTheVaeByAHashOfItsWeightsNotItsName()
    {
        var hash = LatentCache.ContentHash(vae);
        Assert.Matches("^[0-9a-f]{32}$", hash);
        Assert.Equal(hash, LatentCache.ContentHash(vae));
        var weight = vae.Parameters().First();
        using (Autograd.NoGrad())
        {
            using var original = weight.Clone();
            using var flat = weight.Flatten();
            using var one = flat.Narrow(0, 0, 1);
            one.Add_(1e-3);
            try
            {
                Assert.NotEqual(hash, LatentCache.ContentHash(vae));
            }
            finally
            {
                weight.Copy_(original);
            }
        }
        Assert.Equal(hash, LatentCache.ContentHash(vae));
    }

    [Fact]
    public void TextEmbeddingsAreEncodedOncePerCaption()
    {
        var calls = new List<string>();
        using var cache = new TextEmbeddingCache(caption =>
        {
            calls.Add(caption);
            return new TextConditioning(torch.Full([1, 2, 3], caption.Length), null);
        });
        using (var first = cache.Get("a dog")) Assert.Equal(5f, first.PromptEmbeds.ToArray<float>()[0]);
        using (var second = cache.Get("a dog"))
        {
            Assert.Equal(Enumerable.Repeat(5f, 6), second.PromptEmbeds.ToArray<float>());
            Assert.Null(second.PooledPromptEmbeds);
        }
        using (cache.Get("")) { }
        Assert.Equal(["a dog", ""], calls);
        Assert.Equal((1, 2, 2), (cache.Hits, cache.Misses, cache.Count));
    }
}
