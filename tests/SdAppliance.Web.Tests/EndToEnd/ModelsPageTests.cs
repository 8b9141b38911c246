using System.Security.Cryptography;
using Microsoft.Playwright;

namespace SdAppliance.Web.Tests.EndToEnd;

/// <summary>The Models page in a real browser: the catalog with families and hashes, an export job ending in a download, an upload that survives a dropped chunk.</summary>
public sealed class ModelsPageTests
{
    private static readonly string DemoFile = Path.Combine(DataFolderRoot(), "models", "demo", "demo.safetensors");

    [Fact]
    public async Task The_models_page_lists_the_demo_model_with_its_family_and_hash_and_an_fp16_export_is_downloaded()
    {
        using var appliance = new LiveAppliance();
        var single = Path.Combine(appliance.DataFolder, "models", "tiny.safetensors");
        File.Copy(DemoFile, single);
        var hash = Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(single)))[..10];
        await using var browser = await Browser.LaunchAsync();
        await using var session = await SignInAsync(browser, appliance);
        var page = session.Page;

        await session.GoToAsync("/models");
        var demo = page.Locator("[data-testid='model-row'][data-name='demo']");
        await Assertions.Expect(demo.GetByTestId("model-family")).ToHaveTextAsync("SD 1.x");
        var tiny = page.Locator("[data-testid='model-row'][data-name='tiny.safetensors']");
        await Assertions.Expect(tiny.GetByTestId("model-hash")).ToHaveTextAsync(hash);
        await Assertions.Expect(tiny.GetByTestId("model-family")).ToHaveTextAsync("SD 1.x");

        await demo.ClickAsync();
        await Assertions.Expect(page.GetByTestId("detail-family")).ToHaveTextAsync("SD 1.x");
        await page.GetByTestId("export-fp16").ClickAsync();
        var job = page.Locator("[data-testid='export-job'][data-state='completed']");
        await job.WaitForAsync(new() { Timeout = 120_000 });
        await page.Mouse.MoveAsync(1, 1);  // no tooltip in the picture
        await page.GetByText("one float16 .safetensors file").WaitForAsync(new() { State = WaitForSelectorState.Hidden });
        await session.ScreenshotAsync("models");

        var download = await page.RunAndWaitForDownloadAsync(() => job.GetByTestId("export-download").ClickAsync());
        Assert.Equal("demo-fp16.safetensors", download.SuggestedFilename);
        var saved = Path.Combine(appliance.DataFolder, "downloaded.safetensors");
        await download.SaveAsAsync(saved);
        using (var file = Formats.SafetensorsFile.Open(saved))
            Assert.Contains(file.Tensors, t => t.DType == Formats.SafetensorsDType.F16);
        await session.AssertNoErrorsAsync();
    }

    [Fact]
    public async Task An_upload_whose_chunk_request_is_dropped_continues_from_the_servers_offset_and_imports_the_model()
    {
        using var appliance = new LiveAppliance();
        await using var browser = await Browser.LaunchAsync();
        await using var session = await SignInAsync(browser, appliance);
        var page = session.Page;
        var puts = 0;
        var dropped = false;
        await page.RouteAsync("**/ui/uploads/*", async route =>
        {
            if (route.Request.Method != "PUT")
            {
                await route.ContinueAsync();
                return;
            }
            // The second chunk's first try never reaches the server: the connection drops.
            if (Interlocked.Increment(ref puts) == 2)
            {
                dropped = true;
                await route.AbortAsync("connectionreset");
                return;
            }
            await route.ContinueAsync();
        });

        await session.GoToAsync("/models");
        var bytes = await File.ReadAllBytesAsync(DemoFile);
        await page.GetByTestId("upload-input").SetInputFilesAsync(new FilePayload { Name = "uploaded.safetensors", MimeType = "application/octet-stream", Buffer = bytes });
        await page.GetByTestId("upload-start").ClickAsync();

        var row = page.Locator("[data-testid='upload-row'][data-name='uploaded.safetensors']");
        await Assertions.Expect(row).ToHaveAttributeAsync("data-state", "imported", new() { Timeout = 60_000 });
        Assert.True(dropped);
        Assert.Equal(3, puts);  // two chunks, the second sent again
        await Assertions.Expect(page.Locator("[data-testid='model-row'][data-name='uploaded.safetensors']")).ToBeVisibleAsync();
        Assert.Equal(bytes, await File.ReadAllBytesAsync(Path.Combine(appliance.DataFolder, "models", "uploaded.safetensors")));
        await session.AssertNoErrorsAsync(BrowserPage.DroppedRequest);
    }

    private static async Task<BrowserPage> SignInAsync(Browser browser, LiveAppliance appliance)
    {
        var user = await appliance.CreateUserAsync(admin: true);
        var session = await browser.NewPageAsync(appliance.Address);
        await session.SignInAsync(user);
        return session;
    }

    private static string DataFolderRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "models", "demo", "demo.safetensors"))) return dir.FullName;
        throw new InvalidOperationException("no repository with models/demo above the tests");
    }
}
