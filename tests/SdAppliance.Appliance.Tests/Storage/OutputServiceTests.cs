using SdAppliance.Formats;
using SdAppliance.Imaging;
using static SdAppliance.Appliance.Tests.Storage.StorageFixture;

namespace SdAppliance.Appliance.Tests.Storage;

public sealed class OutputServiceTests : IDisposable
{
    private readonly StorageFixture storage = new();
    private readonly CancellationToken none = CancellationToken.None;

    private static RgbImage Picture(string parameters)
    {
        var image = new RgbImage(8, 8, 3);
        image.Text[ImageCodec.ParametersKey] = parameters;
        return image;
    }

    [Fact]
    public async Task Outputs_are_numbered_per_day_keep_their_parameters_and_are_listed_newest_first_to_their_owner()
    {
        var first = await storage.Outputs.SaveAsync("alice", Picture("a cat\nSteps: 4, Seed: 42"), 42, none);
        var second = await storage.Outputs.SaveAsync("bob", Picture("a dog"), 7, none);
        var third = await storage.Outputs.SaveAsync("alice", ImageCodec.Encode(Picture("a bird")), null, none);
        var day = DateTime.UtcNow.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture);
        // The day can roll over between saves; the numbering is per day folder.
        if (first.Day == day && third.Day == day)
            Assert.Equal([$"{day}/00001-42.png", $"{day}/00002-7.png", $"{day}/00003.png"], new[] { first.Path, second.Path, third.Path });

        var saved = ImageCodec.Load(Path.Combine(storage.Data.Outputs, first.Path));
        Assert.Equal("a cat\nSteps: 4, Seed: 42", saved.Text[ImageCodec.ParametersKey]);

        Assert.Equal([third.Path, first.Path], (await storage.Outputs.ListAsync(Alice, null, 100, none)).Select(o => o.Path));
        Assert.Equal([second.Path], (await storage.Outputs.ListAsync(Bob, null, 100, none)).Select(o => o.Path));
        Assert.Equal([third.Path, second.Path, first.Path], (await storage.Outputs.ListAsync(Admin, null, 100, none)).Select(o => o.Path));
        Assert.Equal([third.Path], (await storage.Outputs.ListAsync(Admin, null, 1, none)).Select(o => o.Path));
        Assert.Empty(await storage.Outputs.ListAsync(Admin, "2001-01-01", 100, none));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(storage.Data.Outputs, first.Day), ".*"));
    }

    [Fact]
    public async Task A_download_is_the_owners_or_an_admins_and_stays_inside_outputs()
    {
        var output = await storage.Outputs.SaveAsync("alice", Picture("x"), 1, none);
        var file = await storage.Outputs.OpenAsync(Alice, output.Path, none);
        Assert.NotNull(file);
        Assert.Equal("image/png", file.ContentType);
        Assert.Equal(new FileInfo(file.FullPath).Length, file.Length);
        Assert.NotNull(await storage.Outputs.OpenAsync(Admin, output.Path, none));
        Assert.Null(await storage.Outputs.OpenAsync(Bob, output.Path, none));
        Assert.Null(await storage.Outputs.OpenAsync(Alice, "2001-01-01/00001.png", none));

        // A file put there by hand is an admin's to see.
        File.WriteAllBytes(Path.Combine(storage.Data.Outputs, output.Day, "99999.png"), ImageCodec.Encode(Picture("hand")));
        Assert.Null(await storage.Outputs.OpenAsync(Alice, $"{output.Day}/99999.png", none));
        Assert.NotNull(await storage.Outputs.OpenAsync(Admin, $"{output.Day}/99999.png", none));

        foreach (var escape in (string[])["../appliance.db", "/etc/passwd", "..%2fappliance.db", $"{output.Day}/../../appliance.db"])
            await Assert.ThrowsAnyAsync<UserInputException>(() => storage.Outputs.OpenAsync(Admin, escape, none));
    }

    [Fact]
    public async Task Concurrent_saves_never_share_a_name()
    {
        var saves = await Task.WhenAll(Enumerable.Range(0, 20).Select(i => Task.Run(() => storage.Outputs.SaveAsync("alice", Picture($"{i}"), i, none))));
        Assert.Equal(20, saves.Select(s => s.Path).Distinct().Count());
        Assert.Equal(20, (await storage.Outputs.ListAsync(Alice, null, 100, none)).Count);
    }

    [Fact]
    public async Task An_output_is_deleted_by_its_owner_or_an_admin_only_and_its_png_info_is_read_back()
    {
        var alices = await storage.Outputs.SaveAsync("alice", Picture("a cat\nSteps: 4, Seed: 42"), 42, none);
        var bobs = await storage.Outputs.SaveAsync("bob", Picture("a dog"), 7, none);
        Assert.Equal("a cat\nSteps: 4, Seed: 42", await storage.Outputs.ParametersAsync(Alice, alices.Path, none));
        Assert.Null(await storage.Outputs.ParametersAsync(Bob, alices.Path, none));

        Assert.False(await storage.Outputs.DeleteAsync(Bob, alices.Path, none));
        Assert.True(File.Exists(Path.Combine(storage.Data.Outputs, alices.Path)));
        Assert.True(await storage.Outputs.DeleteAsync(Alice, alices.Path, none));
        Assert.False(File.Exists(Path.Combine(storage.Data.Outputs, alices.Path)));
        Assert.Empty(await storage.Outputs.ListAsync(Alice, null, 100, none));
        Assert.False(await storage.Outputs.DeleteAsync(Alice, alices.Path, none));

        Assert.True(await storage.Outputs.DeleteAsync(Admin, bobs.Path, none));
        Assert.Null(await storage.Outputs.OpenAsync(Bob, bobs.Path, none));
        await Assert.ThrowsAnyAsync<UserInputException>(() => storage.Outputs.DeleteAsync(Admin, "../appliance.db", none));
    }

    public void Dispose() => storage.Dispose();
}
