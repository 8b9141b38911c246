using SdAppliance.Appliance.Storage;
using SdAppliance.Formats;
using SdAppliance.Imaging;
using SdAppliance.Training.Data;
using static SdAppliance.Appliance.Tests.Storage.StorageFixture;

namespace SdAppliance.Appliance.Tests.Storage;

/// <summary>The dataset page's tools: concept folder repeats, bulk caption edits, the bucket preview, thumbnails, class images.</summary>
public sealed class DatasetToolsTests : IDisposable
{
    private readonly StorageFixture storage = new();
    private readonly CancellationToken none = CancellationToken.None;

    private static byte[] Image(int width, int height, byte red = 200)
    {
        var image = new RgbImage(width, height, 3);
        for (var i = 0; i < image.Pixels.Length; i += 3) image.Pixels[i] = red;
        return ImageCodec.Encode(image, ImageEncodeOptions.Png);
    }

    private static async IAsyncEnumerable<DatasetUpload> Uploads(params (string Name, byte[] Bytes)[] files)
    {
        foreach (var (name, bytes) in files)
        {
            await Task.Yield();
            yield return new DatasetUpload(name, new MemoryStream(bytes));
        }
    }

    private async Task CatsAsync()
    {
        await storage.Datasets.CreateAsync(Alice, "cats", isPrivate: false, none);
        await storage.Datasets.AddImagesAsync(Alice, "cats", "10_cat", Uploads(("a.png", Image(64, 64)), ("a.txt", "a cat, red"u8.ToArray()), ("b.png", Image(128, 64))), none);
        await storage.Datasets.AddImagesAsync(Alice, "cats", null, Uploads(("c.png", Image(64, 128)), ("c.txt", "sks, cat"u8.ToArray())), none);
    }

    [Fact]
    public async Task Repeats_rename_the_folder_with_its_captions_and_training_draws_it_that_often()
    {
        await CatsAsync();
        var moved = await storage.Datasets.SetRepeatsAsync(Alice, "cats", "10_cat", 3, none);
        Assert.Equal(new ConceptFolder("3_cat", "cat", 3, 2), moved);

        var folders = await storage.Datasets.ListFoldersAsync(Bob, "cats", none);
        Assert.Equal([new ConceptFolder("", "", 1, 1), new ConceptFolder("3_cat", "cat", 3, 2)], folders);
        var images = (await storage.Datasets.ListImagesAsync(Alice, "cats", none))!;
        Assert.Equal("a cat, red", images.Single(i => i.Path == "3_cat/a.png").Caption);
        var dataset = TrainingDataset.Scan(new DatasetOptions { DataDir = Path.Combine(storage.Data.FullPath, "datasets/cats"), Resolution = 64 });
        Assert.Equal(1 + (2 * 3), dataset.ExamplesPerEpoch);
    }

    [Fact]
    public async Task Repeats_never_merge_into_a_folder_that_exists_and_are_checked()
    {
        await CatsAsync();
        await storage.Datasets.AddImagesAsync(Alice, "cats", "5_cat", Uploads(("z.png", Image(64, 64))), none);

        var taken = await Assert.ThrowsAnyAsync<UserInputException>(() => storage.Datasets.SetRepeatsAsync(Alice, "cats", "10_cat", 5, none));
        Assert.Equal("repeats", taken.Subject);
        Assert.Contains("5_cat", taken.Message, StringComparison.Ordinal);
        Assert.Equal(2, Directory.GetFiles(Path.Combine(storage.Data.Datasets, "cats", "10_cat"), "*.png").Length);
        Assert.Single(Directory.GetFiles(Path.Combine(storage.Data.Datasets, "cats", "5_cat"), "*.png"));

        Assert.Equal("repeats", (await Assert.ThrowsAnyAsync<UserInputException>(() => storage.Datasets.SetRepeatsAsync(Alice, "cats", "10_cat", 0, none))).Subject);
        Assert.Equal("folder", (await Assert.ThrowsAnyAsync<UserInputException>(() => storage.Datasets.SetRepeatsAsync(Alice, "cats", "cat", 2, none))).Subject);
        await Assert.ThrowsAnyAsync<UserInputException>(() => storage.Datasets.SetRepeatsAsync(Bob, "cats", "10_cat", 2, none));  // not his
        Assert.Equal("12_dog", DatasetService.RepeatFolderName(12, " dog "));
    }

    [Fact]
    public async Task A_bulk_edit_changes_only_the_captions_it_touches_and_writes_caption_files()
    {
        await CatsAsync();
        var changed = await storage.Datasets.EditCaptionsAsync(Alice, "cats", new CaptionEdit(CaptionEditKind.AddTrigger, "sks"), null, none);
        Assert.Equal(2, changed);   // c.png starts with sks already
        var images = (await storage.Datasets.ListImagesAsync(Alice, "cats", none))!.ToDictionary(i => i.Path, i => i.Caption);
        Assert.Equal("sks, a cat, red", images["10_cat/a.png"]);
        Assert.Equal("sks", images["10_cat/b.png"]);
        Assert.Equal("sks, cat", images["c.png"]);

        Assert.Equal(1, await storage.Datasets.EditCaptionsAsync(Alice, "cats", new CaptionEdit(CaptionEditKind.RemoveTag, "red"), ["10_cat/a.png", "c.png"], none));
        Assert.Equal((true, "sks, a cat"), await storage.Datasets.GetCaptionAsync(Alice, "cats", "10_cat/a.png", none));
        var empty = await Assert.ThrowsAnyAsync<UserInputException>(() => storage.Datasets.EditCaptionsAsync(Alice, "cats", new CaptionEdit(CaptionEditKind.Replace, ""), null, none));
        Assert.Equal("find", empty.Subject);
    }

    [Fact]
    public async Task The_bucket_preview_is_what_the_trainer_plans()
    {
        await CatsAsync();
        var preview = (await storage.Datasets.PreviewBucketsAsync(Alice, "cats", 512, enableBucket: true, none))!;
        var wide = preview.Images.Single(i => i.Image == "10_cat/b.png");
        Assert.Equal((128, 64), (wide.Width, wide.Height));
        Assert.Equal(AspectBuckets.Select(AspectBuckets.MakeBucketResolutions(512, 512, 256, 1024, 64), 128, 64), (wide.BucketWidth, wide.BucketHeight));
        Assert.True(wide.BucketWidth > wide.BucketHeight);
        Assert.True(wide.ResizedWidth >= wide.BucketWidth && wide.ResizedHeight >= wide.BucketHeight);
        Assert.Equal((wide.ResizedWidth - wide.BucketWidth) / 2, wide.CropLeft);

        var square = (await storage.Datasets.PreviewBucketsAsync(Alice, "cats", 64, enableBucket: false, none))!;
        var tall = square.Images.Single(i => i.Image == "c.png");
        Assert.Equal((64, 64, 64, 128, 0, 32), (tall.BucketWidth, tall.BucketHeight, tall.ResizedWidth, tall.ResizedHeight, tall.CropLeft, tall.CropTop));
        Assert.Equal("resolution", (await Assert.ThrowsAnyAsync<UserInputException>(() => storage.Datasets.PreviewBucketsAsync(Alice, "cats", 100, false, none))).Subject?.ToLowerInvariant());
    }

    [Fact]
    public async Task Thumbnails_are_made_once_and_made_again_when_the_image_changes()
    {
        await CatsAsync();
        var thumbnails = new ThumbnailCache(storage.Datasets, storage.Data);
        var first = (await thumbnails.GetAsync(Bob, "cats", "10_cat/b.png", 128, none))!;
        Assert.StartsWith(thumbnails.Folder, first.FullPath, StringComparison.Ordinal);
        var info = ImageCodec.Identify(first.FullPath);
        Assert.Equal((ImageFormat.Jpeg, 128, 64), (info.Format, info.Width, info.Height));   // never enlarged past the image... it is 128 wide

        File.WriteAllBytes(first.FullPath, "cached"u8.ToArray());   // a second request must not decode again
        var second = (await thumbnails.GetAsync(Alice, "cats", "10_cat/b.png", 128, none))!;
        Assert.Equal("cached", File.ReadAllText(second.FullPath));

        var source = Path.Combine(storage.Data.Datasets, "cats", "10_cat", "b.png");
        File.SetLastWriteTimeUtc(source, DateTime.UtcNow.AddMinutes(1));
        var third = (await thumbnails.GetAsync(Alice, "cats", "10_cat/b.png", 128, none))!;
        Assert.NotEqual(first.FullPath, third.FullPath);
        Assert.Equal(ImageFormat.Jpeg, ImageCodec.Identify(third.FullPath).Format);
        Assert.Empty(Directory.GetFiles(thumbnails.Folder, "*.tmp*", SearchOption.AllDirectories));

        var small = (await thumbnails.GetAsync(Alice, "cats", "c.png", 128, none))!;
        Assert.Equal((64, 128), (ImageCodec.Identify(small.FullPath).Width, ImageCodec.Identify(small.FullPath).Height));
        Assert.Null(await thumbnails.GetAsync(Alice, "cats", "nope.png", 128, none));
        Assert.Equal("size", (await Assert.ThrowsAnyAsync<UserInputException>(() => thumbnails.GetAsync(Alice, "cats", "c.png", 100, none))).Subject);
    }

    [Fact]
    public async Task Class_folders_are_counted_and_may_not_look_like_concept_folders()
    {
        await CatsAsync();
        Assert.Equal(0, await storage.Datasets.CountClassImagesAsync(Alice, "cats", "class", none));
        Directory.CreateDirectory(Path.Combine(storage.Data.Datasets, "cats", "class"));
        File.WriteAllBytes(Path.Combine(storage.Data.Datasets, "cats", "class", "class-0.png"), Image(64, 64));
        Assert.Equal(1, await storage.Datasets.CountClassImagesAsync(Bob, "cats", "class", none));
        Assert.Equal("class_folder", (await Assert.ThrowsAnyAsync<UserInputException>(() => storage.Datasets.CountClassImagesAsync(Alice, "cats", "3_class", none))).Subject);
    }

    public void Dispose() => storage.Dispose();
}

/// <summary>The class images job as the dataset page queues it.</summary>
public sealed class ClassImagesTests : IDisposable
{
    private readonly StorageFixture storage = new(withApplicationRoot: true);

    [Fact]
    public async Task Generating_queues_a_class_images_job_for_the_datasets_class_folder()
    {
        await storage.Datasets.CreateAsync(Alice, "cats", isPrivate: false, CancellationToken.None);
        var classImages = new ClassImages(storage.Datasets, storage.Jobs, storage.Catalog, storage.Data);

        var job = await classImages.GenerateAsync(Alice, new ClassImagesRequest("cats", "class", " a photo of a cat ", 4), CancellationToken.None);

        Assert.Equal((SdAppliance.Appliance.Jobs.JobKind.ClassImages, "alice"), (job.Kind, job.OwnerId));
        Assert.Equal("datasets/cats", job.Request.GetProperty("data").GetString());
        Assert.Equal("datasets/cats/class", job.Request.GetProperty("class_data").GetString());
        Assert.Equal("a photo of a cat", job.Request.GetProperty("class_prompt").GetString());
        Assert.Equal(4, job.Request.GetProperty("num_class_images").GetInt32());
        Assert.Equal(64, job.Request.GetProperty("resolution").GetInt32());  // no size given: the demo model's own
        var sized = await classImages.GenerateAsync(Alice, new ClassImagesRequest("cats", "class", "a cat", 4, Resolution: 96), CancellationToken.None);
        Assert.Equal(96, sized.Request.GetProperty("resolution").GetInt32());

        Assert.Equal("class_prompt", (await Assert.ThrowsAnyAsync<UserInputException>(() => classImages.GenerateAsync(Alice, new ClassImagesRequest("cats", "class", " ", 4), CancellationToken.None))).Subject);
        Assert.Equal("num_class_images", (await Assert.ThrowsAnyAsync<UserInputException>(() => classImages.GenerateAsync(Alice, new ClassImagesRequest("cats", "class", "a cat", 0), CancellationToken.None))).Subject);
        await Assert.ThrowsAnyAsync<UserInputException>(() => classImages.GenerateAsync(Bob, new ClassImagesRequest("cats", "class", "a cat", 4), CancellationToken.None));   // not his dataset
    }

    public void Dispose() => storage.Dispose();
}
