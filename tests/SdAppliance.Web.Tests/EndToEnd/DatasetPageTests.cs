using Microsoft.Extensions.DependencyInjection;
using Microsoft.Playwright;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Storage;

namespace SdAppliance.Web.Tests.EndToEnd;

/// <summary>The datasets pages in a real browser: create a dataset, drop images on it, caption them one by one and in bulk.</summary>
public sealed class DatasetPageTests
{
    /// <summary>Six small demo-style images and one file that is no image.</summary>
    private static List<string> Files(string folder)
    {
        var files = DemoPictures.Write(folder, count: 6);
        var notes = Path.Combine(folder, "notes.png");
        File.WriteAllText(notes, "these are my notes, not a picture");
        files.Add(notes);
        return files;
    }

    [Fact]
    public async Task Create_upload_caption_one_and_add_a_trigger_word_to_all()
    {
        using var appliance = new LiveAppliance();
        var user = await appliance.CreateUserAsync(admin: false);
        var folder = Directory.CreateTempSubdirectory("sdapp-e2e-images-").FullName;
        await using var browser = await Browser.LaunchAsync();
        await using var session = await browser.NewPageAsync(appliance.Address);
        var page = session.Page;

        await session.SignInAsync(user);

        await session.GoToAsync("/datasets");
        await page.GetByTestId("no-datasets").WaitForAsync();
        await page.Locator("[data-testid='new-dataset-name'] input, input[data-testid='new-dataset-name']").FillAsync("cats");
        await page.GetByTestId("create-dataset").ClickAsync();
        await page.WaitForURLAsync("**/datasets/cats");
        await session.WaitForCircuitAsync();

        await page.Locator("[data-testid='drop-zone'][data-ready='true']").WaitForAsync();   // the page's script listens
        // Six images and a text file named .png: the images land, the text file is refused with its name, the reason and the fix.
        await page.GetByTestId("upload-input").SetInputFilesAsync(Files(folder));
        var refused = page.GetByTestId("rejected-file");
        await refused.WaitForAsync();
        Assert.Equal(1, await refused.CountAsync());
        var reason = await refused.InnerTextAsync();
        Assert.Contains("notes.png", reason, StringComparison.Ordinal);
        Assert.Contains("is not a PNG, JPEG or WebP image", reason, StringComparison.Ordinal);
        Assert.Contains("upload PNG, JPEG or WebP images", reason, StringComparison.Ordinal);
        var cards = page.GetByTestId("image-card");
        await Assertions.Expect(cards).ToHaveCountAsync(6);
        await Assertions.Expect(page.GetByTestId("upload-summary")).ToContainTextAsync("6 added, 1 refused, 0 to go");
        // Every thumbnail came from the server's cache.
        await Assertions.Expect(page.Locator("[data-testid='image-card'] img")).ToHaveCountAsync(6);
        await page.WaitForFunctionAsync("() => [...document.querySelectorAll(\"[data-testid='image-card'] img\")].every(i => i.complete && i.naturalWidth > 0)");

        // One caption, saved by itself after typing stops.
        var card = page.Locator("[data-testid='image-card'][data-image='shape2.png']");
        await card.Locator("textarea").First.FillAsync("a wide green square");
        await Assertions.Expect(card.GetByTestId("caption-state")).ToHaveTextAsync("Saved");
        var datasets = appliance.Services.GetRequiredService<DatasetService>();
        var caller = new Caller(user.Id, IsAdmin: false);
        Assert.Equal((true, "a wide green square"), await datasets.GetCaptionAsync(caller, "cats", "shape2.png", CancellationToken.None));

        // A trigger word in front of every caption.
        await page.Locator("[data-testid='trigger-word'] input, input[data-testid='trigger-word']").FillAsync("sks");
        await Assertions.Expect(page.GetByTestId("bulk-edit")).ToContainTextAsync("changes 6 of 6 captions");
        await page.GetByTestId("add-trigger").ClickAsync();
        await Assertions.Expect(card.Locator("textarea").First).ToHaveValueAsync("sks, a wide green square");
        var images = (await datasets.ListImagesAsync(caller, "cats", CancellationToken.None))!;
        Assert.Equal(6, images.Count);
        Assert.All(images, i => Assert.StartsWith("sks", i.Caption, StringComparison.Ordinal));
        Assert.Equal("sks, a wide green square", images.Single(i => i.Path == "shape2.png").Caption);
        await Assertions.Expect(page.Locator("[data-testid='tag-row'][data-tag='sks'] td").Nth(1)).ToHaveTextAsync("6");
        await page.EvaluateAsync("window.scrollTo(0, 0)");
        await session.ScreenshotAsync("dataset");

        // The bucket preview: the trainer's planning at 512 with buckets puts the wide image in a wide bucket.
        await page.GetByRole(AriaRole.Tab, new() { Name = "Buckets" }).ClickAsync();
        await page.GetByTestId("bucket-preview").ClickAsync();
        await Assertions.Expect(page.GetByTestId("bucket-item")).ToHaveCountAsync(6);
        await Assertions.Expect(page.Locator("[data-testid='bucket-item'][data-image='shape2.png']")).ToContainTextAsync("128×64 → bucket 704×320");
        await Assertions.Expect(page.GetByTestId("bucket-preview")).ToBeEnabledAsync();
        await session.ScreenshotAsync("dataset-buckets");

        await page.GetByRole(AriaRole.Tab, new() { Name = "Concept folders" }).ClickAsync();
        await Assertions.Expect(page.Locator("[data-testid='folder-row'][data-folder='']")).ToContainTextAsync("6");
        await page.GetByRole(AriaRole.Tab, new() { Name = "Class images" }).ClickAsync();
        await Assertions.Expect(page.GetByTestId("class-count")).ToContainTextAsync("0 of 100 class images in class/");

        await session.GoToAsync("/datasets");
        await Assertions.Expect(page.Locator("[data-testid='dataset-row'][data-name='cats']")).ToContainTextAsync("6");
        await session.ScreenshotAsync("datasets");
        await session.AssertNoErrorsAsync();
        Directory.Delete(folder, recursive: true);
    }
}
