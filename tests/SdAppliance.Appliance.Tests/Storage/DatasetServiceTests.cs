using SdAppliance.Appliance.Storage;
using SdAppliance.Formats;
using SdAppliance.Imaging;
using SdAppliance.Training.Data;
using static SdAppliance.Appliance.Tests.Storage.StorageFixture;

namespace SdAppliance.Appliance.Tests.Storage;

public sealed class DatasetServiceTests : IDisposable
{
    private readonly StorageFixture storage = new();
    private readonly CancellationToken none = CancellationToken.None;

    private static byte[] Image(ImageFormat format, byte red = 200)
    {
        var image = new RgbImage(64, 64, 3);
        for (var i = 0; i < image.Pixels.Length; i += 3) image.Pixels[i] = red;
        return ImageCodec.Encode(image, new ImageEncodeOptions { Format = format });
    }

    private static async IAsyncEnumerable<DatasetUpload> Uploads(params (string Name, byte[] Bytes)[] files)
    {
        foreach (var (name, bytes) in files)
        {
            await Task.Yield();
            yield return new DatasetUpload(name, new MemoryStream(bytes));
        }
    }

    [Fact]
    public async Task Images_are_typed_by_content_captioned_and_land_in_kohyas_layout_that_training_reads()
    {
        var created = await storage.Datasets.CreateAsync(Alice, "cats", isPrivate: false, none);
        Assert.Equal(("cats", "alice", 0), (created.Name, created.OwnerId, created.ImageCount));

        var added = await storage.Datasets.AddImagesAsync(Alice, "cats", "10_cat", Uploads(
            ("a.png", Image(ImageFormat.Png)),
            ("b.png", Image(ImageFormat.Jpeg)),   // a JPEG named .png is stored as what it is
            ("a.txt", "a cat, sitting"u8.ToArray())), none);
        Assert.Equal(["10_cat/a.png", "10_cat/b.jpg"], added.Select(i => i.Path));
        Assert.All(added, i => Assert.Equal(10, i.Repeats));
        await storage.Datasets.AddImagesAsync(Alice, "cats", null, Uploads(("a.webp", Image(ImageFormat.WebP)), ("a.png", Image(ImageFormat.Png, 10))), none);

        var images = await storage.Datasets.ListImagesAsync(Bob, "cats", none);
        Assert.NotNull(images);
        Assert.Equal(["10_cat/a.png", "10_cat/b.jpg", "a-2.png", "a.webp"], images.Select(i => i.Path).Order(StringComparer.Ordinal));
        Assert.Equal("a cat, sitting", images.Single(i => i.Path == "10_cat/a.png").Caption);
        Assert.Null(images.Single(i => i.Path == "a.webp").Caption);

        Assert.True(await storage.Datasets.SetCaptionAsync(Alice, "cats", "a.webp", "a red square", none));
        Assert.Equal((true, "a red square"), await storage.Datasets.GetCaptionAsync(Bob, "cats", "a.webp", none));

        Assert.Equal("datasets/cats", created.Path);  // as a training job names it; no server path
        var dataset = TrainingDataset.Scan(new DatasetOptions { DataDir = Path.Combine(storage.Data.FullPath, created.Path), Resolution = 64 });
        Assert.Empty(dataset.Skipped);
        Assert.Equal(4, (await storage.Datasets.GetAsync(Alice, "cats", none))!.ImageCount);
    }

    [Fact]
    public async Task One_bad_file_refuses_the_whole_upload_and_leaves_the_dataset_as_it_was()
    {
        await storage.Datasets.CreateAsync(Alice, "set", false, none);
        var e = await Assert.ThrowsAnyAsync<UserInputException>(() => storage.Datasets.AddImagesAsync(Alice, "set", null, Uploads(
            ("good.png", Image(ImageFormat.Png)),
            ("evil.png", "<?php system($_GET['x']); ?>"u8.ToArray())), none));
        Assert.Equal("evil.png", e.Subject);
        Assert.Contains("not a PNG, JPEG or WebP", e.Message);

        var truncated = Image(ImageFormat.Png)[..60];
        e = await Assert.ThrowsAnyAsync<UserInputException>(() => storage.Datasets.AddImagesAsync(Alice, "set", null, Uploads(("cut.png", truncated)), none));
        Assert.Contains("cannot be decoded", e.Message);

        e = await Assert.ThrowsAnyAsync<UserInputException>(() => storage.Datasets.AddImagesAsync(Alice, "set", null, Uploads(("orphan.txt", "text"u8.ToArray())), none));
        Assert.Contains("without an image", e.Message);
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(storage.Data.Datasets, "set")));
    }

    [Fact]
    public async Task Limits_on_size_and_count_are_options_named_in_the_refusal()
    {
        using var small = new StorageFixture(configure: o => new ApplianceOptions
        {
            DataFolder = o.DataFolder,
            Limits = new() { MaxImageBytes = 100_000, MaxImagesPerUpload = 2, MaxImagesPerDataset = 3, MaxImagePixels = 64 * 64 },
        });
        await small.Datasets.CreateAsync(Alice, "set", false, none);
        var big = new byte[100_001];
        Image(ImageFormat.Png).CopyTo(big, 0);
        Assert.Contains("100,000 bytes", (await Assert.ThrowsAnyAsync<UserInputException>(() => small.Datasets.AddImagesAsync(Alice, "set", null, Uploads(("big.png", big)), none))).Message);
        var tooMany = Enumerable.Range(0, 3).Select(i => ($"{i}.png", Image(ImageFormat.Png))).ToArray();
        Assert.Contains("MaxImagesPerUpload", (await Assert.ThrowsAnyAsync<UserInputException>(() => small.Datasets.AddImagesAsync(Alice, "set", null, Uploads(tooMany), none))).Message);
        await small.Datasets.AddImagesAsync(Alice, "set", null, Uploads(tooMany[..2]), none);
        Assert.Contains("MaxImagesPerDataset", (await Assert.ThrowsAnyAsync<UserInputException>(() => small.Datasets.AddImagesAsync(Alice, "set", null, Uploads(tooMany[..2]), none))).Message);
        var large = ImageCodec.Encode(new RgbImage(65, 64, 3));
        Assert.Contains("pixels", (await Assert.ThrowsAnyAsync<UserInputException>(() => small.Datasets.AddImagesAsync(Alice, "set", null, Uploads(("large.png", large)), none))).Message);
    }

    [Fact]
    public async Task A_caption_training_could_not_read_is_refused()
    {
        await storage.Datasets.CreateAsync(Alice, "set", false, none);
        await storage.Datasets.AddImagesAsync(Alice, "set", null, Uploads(("a.png", Image(ImageFormat.Png))), none);
        var e = await Assert.ThrowsAnyAsync<UserInputException>(() => storage.Datasets.SetCaptionAsync(Alice, "set", "a.png", "(red:1.2.3)", none));
        Assert.Equal("caption", e.Subject);
        Assert.False(File.Exists(Path.Combine(storage.Data.Datasets, "set", "a.txt")));
        Assert.False(await storage.Datasets.SetCaptionAsync(Alice, "set", "missing.png", "x", none));
        await Assert.ThrowsAnyAsync<UserInputException>(() => storage.Datasets.SetCaptionAsync(Alice, "set", "../../appliance.db", "x", none));
        await Assert.ThrowsAnyAsync<UserInputException>(() => storage.Datasets.GetCaptionAsync(Alice, "set", "a.txt", none));
    }

    [Fact]
    public async Task A_private_dataset_is_hidden_from_others_and_a_shared_one_is_changed_by_its_owner_or_an_admin_only()
    {
        await storage.Datasets.CreateAsync(Alice, "mine", isPrivate: true, none);
        await storage.Datasets.CreateAsync(Alice, "ours", isPrivate: false, none);
        Assert.Equal(["ours"], (await storage.Datasets.ListAsync(Bob, none)).Select(d => d.Name));
        Assert.Equal(["mine", "ours"], (await storage.Datasets.ListAsync(Admin, none)).Select(d => d.Name));
        Assert.Null(await storage.Datasets.GetAsync(Bob, "mine", none));
        Assert.False(await storage.Datasets.DeleteAsync(Bob, "mine", none));
        await Assert.ThrowsAsync<DatasetNotFoundException>(() => storage.Datasets.AddImagesAsync(Bob, "mine", null, Uploads(), none));

        await Assert.ThrowsAsync<NotPermittedException>(() => storage.Datasets.AddImagesAsync(Bob, "ours", null, Uploads(("a.png", Image(ImageFormat.Png))), none));
        await storage.Datasets.AddImagesAsync(Admin, "ours", null, Uploads(("a.png", Image(ImageFormat.Png)), ("a.txt", "x"u8.ToArray())), none);
        await Assert.ThrowsAsync<NotPermittedException>(() => storage.Datasets.DeleteImageAsync(Bob, "ours", "a.png", none));
        Assert.True(await storage.Datasets.DeleteImageAsync(Alice, "ours", "a.png", none));
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(storage.Data.Datasets, "ours")));

        var e = await Assert.ThrowsAnyAsync<UserInputException>(() => storage.Datasets.CreateAsync(Bob, "ours", false, none));
        Assert.Contains("already exists", e.Message);
        Assert.True(await storage.Datasets.DeleteAsync(Alice, "ours", none));
        Assert.Equal(["mine"], Directory.EnumerateDirectories(storage.Data.Datasets).Select(Path.GetFileName));
        // The name is free again, and the new dataset is the new creator's.
        Assert.Equal("bob", (await storage.Datasets.CreateAsync(Bob, "ours", false, none)).OwnerId);
    }

    [Theory]
    [InlineData("../escape")]
    [InlineData(".hidden")]
    [InlineData("a/b")]
    [InlineData("%2e%2e")]
    public async Task A_dataset_name_is_one_plain_name(string name) =>
        await Assert.ThrowsAnyAsync<UserInputException>(() => storage.Datasets.CreateAsync(Alice, name, false, none));

    [Fact]
    public async Task A_repeat_folder_must_be_named_as_kohya_names_it()
    {
        await storage.Datasets.CreateAsync(Alice, "set", false, none);
        var e = await Assert.ThrowsAnyAsync<UserInputException>(() => storage.Datasets.AddImagesAsync(Alice, "set", "cats", Uploads(("a.png", Image(ImageFormat.Png))), none));
        Assert.Contains("10_cat", e.Message);

        // A repeat folder that is a link out of the dataset is not written through.
        var outside = Directory.CreateDirectory(Path.Combine(storage.Root, "outside")).FullName;
        Directory.CreateSymbolicLink(Path.Combine(storage.Data.Datasets, "set", "10_out"), outside);
        e = await Assert.ThrowsAnyAsync<UserInputException>(() => storage.Datasets.AddImagesAsync(Alice, "set", "10_out", Uploads(("a.png", Image(ImageFormat.Png))), none));
        Assert.Equal("folder", e.Subject);
        Assert.Empty(Directory.EnumerateFileSystemEntries(outside));
    }

    public void Dispose() => storage.Dispose();
}
