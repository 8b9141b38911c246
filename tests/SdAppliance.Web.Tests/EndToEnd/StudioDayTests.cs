using System.Globalization;
using System.Text.RegularExpressions;
using Microsoft.Playwright;
using SdAppliance.Formats;

namespace SdAppliance.Web.Tests.EndToEnd;

/// <summary>
/// The acceptance, as a person does it in a real browser against the real server in its own process: create the
/// admin, sign in, make a dataset of six images, caption them, train a short LoRA on the demo model and watch it, kill -9
/// the server mid-run and see the run resume on its page, export the LoRA, download it, and draw with it.
/// </summary>
public sealed partial class StudioDayTests : IDisposable
{
    private const string Admin = "studio-admin";
    private const string Password = "A long enough passphrase 1";
    private const int Steps = 40;

    // A page load that follows a form post (sign out, new dataset) on the child host: its first requests are JIT-compiled,
    // and a fresh-clone run on a loaded 2-core box once took past Playwright's 30 s default for the sign-out's redirect.
    private static readonly PageWaitForURLOptions AfterPost = new() { Timeout = 90_000 };

    private readonly string data = Directory.CreateTempSubdirectory("sdapp-studio-").FullName;
    private readonly string pictures = Directory.CreateTempSubdirectory("sdapp-studio-pictures-").FullName;

    // A bound so that a step that never comes fails the test instead of hanging the suite; not a speed check.
    private readonly CancellationTokenSource bound = new(TimeSpan.FromMinutes(15));

    public void Dispose()
    {
        bound.Dispose();
        Directory.Delete(data, recursive: true);
        Directory.Delete(pictures, recursive: true);
    }

    [Fact]
    public async Task From_setup_to_a_resumed_run_and_a_picture_drawn_with_its_LoRA()
    {
        await using var browser = await Browser.LaunchAsync();
        Guid run;
        long savedStep;
        using (var first = await ChildHost.StartAsync(data, bound.Token))
        {
            await using var session = await browser.NewPageAsync(first.Address);
            var page = session.Page;

            // A fresh install sends the first visitor to set up the admin, who is then signed in; sign out and in again.
            await page.GotoAsync("/");
            Assert.Equal("/setup", new Uri(page.Url).AbsolutePath);
            await page.GetByLabel("Name").FillAsync(Admin);
            await page.GetByLabel("Password", new() { Exact = true }).FillAsync(Password);
            await page.GetByLabel("Password again").FillAsync(Password);
            await page.GetByRole(AriaRole.Button, new() { Name = "Create the admin" }).ClickAsync();
            await session.WaitForCircuitAsync();
            await page.GotoAsync("/logout");
            await page.GetByRole(AriaRole.Button, new() { Name = "Sign out" }).ClickAsync();
            await page.WaitForURLAsync("**/login", AfterPost);
            await session.SignInAsync(Admin, Password);

            // A dataset of six pictures; one caption edited by hand, then a trigger word in front of all.
            await session.GoToAsync("/datasets");
            await page.Locator("[data-testid='new-dataset-name'] input, input[data-testid='new-dataset-name']").FillAsync("shapes");
            await page.GetByTestId("create-dataset").ClickAsync();
            await page.WaitForURLAsync("**/datasets/shapes", AfterPost);
            await session.WaitForCircuitAsync();
            await page.Locator("[data-testid='drop-zone'][data-ready='true']").WaitForAsync();
            await page.GetByTestId("upload-input").SetInputFilesAsync(DemoPictures.Write(pictures, count: 6));
            await Assertions.Expect(page.GetByTestId("image-card")).ToHaveCountAsync(6);
            var card = page.Locator("[data-testid='image-card'][data-image='shape1.png']");
            await card.Locator("textarea").First.FillAsync("a red square on a blue background");
            await Assertions.Expect(card.GetByTestId("caption-state")).ToHaveTextAsync("Saved");
            await page.Locator("[data-testid='trigger-word'] input, input[data-testid='trigger-word']").FillAsync("sks");
            await Assertions.Expect(page.GetByTestId("bulk-edit")).ToContainTextAsync("changes 6 of 6 captions");
            await page.GetByTestId("add-trigger").ClickAsync();
            await Assertions.Expect(card.Locator("textarea").First).ToHaveValueAsync("sks, a red square on a blue background");

            // A short LoRA run on the demo model, saved often so that the kill comes after a saved state.
            await session.GoToAsync("/train?dataset=shapes");
            await page.GetByText("LoRA / LoCon", new() { Exact = true }).ClickAsync();
            await Assertions.Expect(page.GetByTestId("plan-images")).ToHaveTextAsync("6");
            await SetAsync(page, "resolution", "64");
            await SetAsync(page, "network_dim", "4");
            await SetAsync(page, "max_train_steps", Steps.ToString(CultureInfo.InvariantCulture));
            await SetAsync(page, "save_every_n_steps", "5");
            await SetAsync(page, "sample_every_n_steps", "10");
            await Assertions.Expect(page.GetByTestId("plan-steps")).ToHaveTextAsync(Steps.ToString(CultureInfo.InvariantCulture));
            await page.GetByTestId("start").ClickAsync();
            await Assertions.Expect(page).ToHaveURLAsync(RunPage());
            run = Guid.Parse(RunPage().Match(page.Url).Groups[1].Value);

            // Watched live: the loss chart gains points and the baseline sample appears.
            var chart = page.GetByTestId("loss-chart");
            var points = await PointsAsync(chart, atLeast: 2);
            await PointsAsync(chart, atLeast: points + 1);
            await page.GetByTestId("sample-image").First.WaitForAsync();
            await WaitForAsync(() => SavedStates(run).Count > 0, "a saved training state", first);
            await session.AssertNoErrorsAsync();
            first.KillHard();
        }
        savedStep = SavedStates(run).Max();
        Assert.True(savedStep < Steps, "the run had ended before the kill: nothing to resume");

        using (var second = await ChildHost.StartAsync(data, bound.Token))
        {
            // The sign-in cookie outlives the restart (the keys are in the data folder); a new page, since the old circuit died with the server.
            await using var session = await browser.NewPageAsync(second.Address);
            var page = session.Page;
            await session.SignInAsync(Admin, Password);
            await session.GoToAsync($"/runs/{run}");
            await Assertions.Expect(page.GetByTestId("run-log")).ToContainTextAsync($"resuming from step-{savedStep:D6}", new() { Timeout = 120_000 });
            await Assertions.Expect(page.GetByTestId("run-state")).ToHaveTextAsync("completed", new() { Timeout = 600_000 });
            await session.ScreenshotAsync("run-resumed");

            // The LoRA it made, through the checkpoint grid: one image per checkpoint and prompt, the best exported to the catalog.
            await page.GetByTestId("grid-picker").GetByRole(AriaRole.Checkbox).First.CheckAsync();
            var prompts = page.Locator("[data-testid='grid-prompts'] textarea, textarea[data-testid='grid-prompts']").First;
            await prompts.FillAsync("sks, a red square on a blue background");
            await prompts.PressAsync("Tab");
            await page.GetByTestId("grid-generate").ClickAsync();
            await page.GetByTestId("grid-image").First.WaitForAsync(new() { Timeout = 300_000 });
            await page.GetByTestId("grid-pick").First.ClickAsync();
            var exportName = page.Locator("[data-testid='grid-export-name'] input, input[data-testid='grid-export-name']");
            await exportName.FillAsync("sks-shapes");
            await exportName.PressAsync("Tab");
            await page.GetByTestId("grid-export-button").ClickAsync();
            await Assertions.Expect(page.GetByTestId("grid-exported")).ToContainTextAsync("<lora:sks-shapes:1>");

            // The run's LoRA file downloads as a safetensors file.
            var download = await page.RunAndWaitForDownloadAsync(() => page.GetByTestId("run-results").Locator("a[href$='.safetensors']").First.ClickAsync());
            var file = Path.Combine(pictures, download.SuggestedFilename);
            await download.SaveAsAsync(file);
            using (var lora = SafetensorsFile.Open(file)) Assert.Contains(lora.Names, n => n.StartsWith("lora_unet_", StringComparison.Ordinal));
            await session.AssertNoErrorsAsync();

            // A picture drawn with the new LoRA on the Generate page: the picker puts its tag into the prompt.
            await session.GoToAsync("/generate");
            var prompt = BrowserPage.Field(page, "prompt");
            await prompt.FillAsync("sks, a red square on a blue background");
            // Committed (its change event) before the picker inserts into it, as the other fields are: else the insert can
            // land on the old value and the late change overwrite it.
            await prompt.PressAsync("Tab");
            await page.GetByTestId("networks").ClickAsync();
            await page.GetByTestId("insert-lora-sks-shapes").ClickAsync();
            await Assertions.Expect(prompt).ToHaveValueAsync(new Regex("<lora:sks-shapes:1>"));
            await BrowserPage.Field(page, "steps").FillAsync("8");
            await BrowserPage.Field(page, "steps").PressAsync("Tab");
            await page.GetByTestId("generate").ClickAsync();
            await page.GetByTestId("result-image").WaitForAsync(new() { Timeout = 180_000 });
            await Assertions.Expect(page.GetByTestId("png-info-text")).ToContainTextAsync("<lora:sks-shapes:1>", new() { Timeout = 60_000 });
            await Assertions.Expect(page.GetByTestId("png-info-text")).ToContainTextAsync("Lora hashes: \"sks-shapes: ");
            await session.ScreenshotAsync("generate-with-lora");
            await session.AssertNoErrorsAsync();
        }
    }

    [GeneratedRegex("/runs/([0-9a-f-]{36})$")]
    private static partial Regex RunPage();

    private static async Task SetAsync(IPage page, string setting, string text)
    {
        var input = page.GetByTestId($"field-{setting}").Locator("input");
        await input.FillAsync(text);
        await input.PressAsync("Tab");
    }

    private static async Task<int> PointsAsync(ILocator chart, int atLeast)
    {
        var deadline = DateTime.UtcNow.AddMinutes(5);
        while (true)
        {
            var points = int.TryParse(await chart.GetAttributeAsync("data-points"), CultureInfo.InvariantCulture, out var n) ? n : 0;
            if (points >= atLeast) return points;
            Assert.True(DateTime.UtcNow < deadline, $"the loss chart has {points} points, waited for {atLeast}");
            await Task.Delay(200);
        }
    }

    private List<long> SavedStates(Guid id)
    {
        var checkpoints = Path.Combine(data, "runs", id.ToString(), "checkpoints");
        return Directory.Exists(checkpoints)
            ? [.. Directory.EnumerateDirectories(checkpoints, "step-*")
                .Where(d => File.Exists(Path.Combine(d, "state.json")))
                .Select(d => long.Parse(Path.GetFileName(d)["step-".Length..], CultureInfo.InvariantCulture))]
            : [];
    }

    private async Task WaitForAsync(Func<bool> condition, string what, ChildHost host)
    {
        while (!condition())
        {
            if (bound.IsCancellationRequested) Assert.Fail($"no {what} within the test's bound: {host.Output}");
            await Task.Delay(50, CancellationToken.None);  // a poll interval, not a synchronisation
        }
    }
}
