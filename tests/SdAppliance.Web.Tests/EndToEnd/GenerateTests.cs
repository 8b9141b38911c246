using System.Text.RegularExpressions;
using Microsoft.Playwright;

namespace SdAppliance.Web.Tests.EndToEnd;

/// <summary>The Generate page in a real browser: a generation on the demo model through the queue, the gallery's PNG info, and back to the form.</summary>
public sealed partial class GenerateTests
{
    private static readonly LocatorWaitForOptions Long = new() { Timeout = 180_000 };

    [Fact]
    public async Task A_picture_generated_on_the_demo_model_shows_in_the_gallery_with_its_png_info_and_goes_back_to_the_form()
    {
        using var appliance = new LiveAppliance();
        var user = await appliance.CreateUserAsync();
        await using var browser = await Browser.LaunchAsync();
        await using var session = await browser.NewPageAsync(appliance.Address);
        var page = session.Page;

        await session.SignInAsync(user);
        await session.GoToAsync("/generate");
        await page.GetByRole(AriaRole.Heading, new() { Name = "Generate" }).WaitForAsync();
        await page.GetByTestId("gallery-empty").WaitForAsync();

        // The page has its model (the demo's 64x64) once its own start is done; typing before that can be lost to its first renders.
        await Assertions.Expect(BrowserPage.Field(page, "width")).ToHaveValueAsync("64");
        const string prompt = "a red circle on a blue background";
        await BrowserPage.Field(page, "prompt").FillAsync(prompt);
        await Assertions.Expect(BrowserPage.Field(page, "prompt")).ToHaveValueAsync(prompt);
        await BrowserPage.Field(page, "steps").FillAsync("16");
        await BrowserPage.Field(page, "steps").PressAsync("Tab");
        Assert.Equal("64", await BrowserPage.Field(page, "width").InputValueAsync());
        await page.GetByTestId("generate").ClickAsync();

        try
        {
            await page.GetByTestId("result-image").WaitForAsync(Long);
        }
        catch (TimeoutException)
        {
            // Say how far it got: the job's state on the page, or the form's refusal.
            await session.ScreenshotAsync("generate-timeout");
            var state = await page.GetByTestId("job-state").AllTextContentsAsync();
            var refusal = await page.GetByTestId("generate-error").AllTextContentsAsync();
            var fieldErrors = await page.Locator(".mud-input-error").AllTextContentsAsync();
            Assert.Fail($"no picture: job state [{string.Join("; ", state)}], error [{string.Join("; ", refusal)}], fields [{string.Join("; ", fieldErrors)}]");
        }
        await page.GetByTestId("gallery-item").WaitForAsync(Long);
        Assert.Equal(1, await page.GetByTestId("gallery-item").CountAsync());
        var info = await page.GetByTestId("png-info-text").TextContentAsync() ?? "";
        Assert.StartsWith(prompt, info, StringComparison.Ordinal);
        Assert.Contains("Steps: 16", info, StringComparison.Ordinal);
        Assert.Contains("Size: 64x64", info, StringComparison.Ordinal);
        var seed = SeedPattern().Match(info).Groups[1].Value;
        Assert.NotEmpty(seed);
        await EventuallyAsync(() => page.GetByTestId("job-state").TextContentAsync(), s => s?.Contains($"seed {seed}", StringComparison.Ordinal) == true);
        // The app bar is fixed: at the top of a full-page screenshot only when the page is scrolled to the top.
        await page.EvaluateAsync("window.scrollTo(0, 0)");
        await session.ScreenshotAsync("generate");

        // Another prompt and the defaults, then the picture's parameters back into the form.
        await BrowserPage.Field(page, "prompt").FillAsync("something else");
        await BrowserPage.Field(page, "steps").FillAsync("20");
        await BrowserPage.Field(page, "steps").PressAsync("Tab");
        await page.GetByTestId("send-to-form").ClickAsync();
        await EventuallyAsync(() => BrowserPage.Field(page, "prompt").InputValueAsync(), v => v == prompt);
        Assert.Equal("16", await BrowserPage.Field(page, "steps").InputValueAsync());
        Assert.Equal(seed, await BrowserPage.Field(page, "seed").InputValueAsync());

        // The picture as img2img's start, from the gallery: a second output that says its strength.
        await page.GetByTestId("use-for-img2img").ClickAsync();
        await page.GetByTestId("init-image").WaitForAsync();
        await page.GetByTestId("generate").ClickAsync();
        await EventuallyAsync(() => page.GetByTestId("gallery-item").CountAsync(), n => n == 2, Long.Timeout);
        await EventuallyAsync(() => page.GetByTestId("png-info-text").TextContentAsync(), t => t?.Contains("Denoising strength: 0.75", StringComparison.Ordinal) == true);
        await session.AssertNoErrorsAsync();
    }

    /// <summary>Polls <paramref name="read"/> until <paramref name="holds"/> (the circuit updates the page a moment later), at most 10 seconds or <paramref name="milliseconds"/>.</summary>
    private static async Task EventuallyAsync<T>(Func<Task<T>> read, Func<T, bool> holds, float? milliseconds = null)
    {
        var value = await read();
        for (var i = 0; i < (milliseconds ?? 10_000) / 100 && !holds(value); i++)
        {
            await Task.Delay(100);
            value = await read();
        }
        Assert.True(holds(value), $"still {value}");
    }

    [GeneratedRegex(@"Seed: (\d+)")]
    private static partial Regex SeedPattern();
}
