using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Playwright;
using SdAppliance.Appliance.Jobs;

namespace SdAppliance.Web.Tests.EndToEnd;

/// <summary>A short LoRA run on the demo model watched live in a real browser; another user cannot open it.</summary>
public sealed class RunPageTests
{
    [Fact]
    public async Task The_run_page_shows_the_loss_chart_gaining_points_and_a_sample_and_another_user_sees_not_found()
    {
        using var appliance = new LiveAppliance();
        await appliance.CreateUserAsync(admin: true);
        var alice = await appliance.CreateUserAsync();
        var bob = await appliance.CreateUserAsync();
        TestDatasets.RedSquares(Path.Combine(appliance.DataFolder, "datasets", "squares"));
        var jobs = appliance.Services.GetRequiredService<JobService>();
        // Long enough to be watched mid-run on any machine; the test cancels it once it has seen what it needs.
        var request = JsonSerializer.SerializeToElement(new Dictionary<string, object>
        {
            ["method"] = "lora", ["data"] = "datasets/squares", ["resolution"] = 64, ["network_dim"] = 4, ["network_alpha"] = 2,
            ["max_train_steps"] = 2000, ["sample_at_start"] = true, ["sample_steps"] = 2,
        });
        var run = await jobs.SubmitAsync(new JobSubmission(JobKind.Training, alice.Id, request), CancellationToken.None);

        await using var browser = await Browser.LaunchAsync();
        await using (var session = await SignedInAsync(browser, appliance, alice))
        {
            var page = session.Page;
            await session.GoToAsync("/runs");
            await page.GetByTestId("run-link").First.WaitForAsync();
            await session.ScreenshotAsync("runs");

            // Opened mid-run: the page shows the whole history (every step so far is a point, below 200 steps), then live.
            var reached = await StepAsync(jobs, alice, run.Id, atLeast: 20);
            await session.GoToAsync($"/runs/{run.Id}");
            var chart = page.GetByTestId("loss-chart");
            var first = await PointsAsync(chart, atLeast: (int)reached);
            // Live: more points arrive over the circuit without a reload.
            await PointsAsync(chart, atLeast: first + 1);
            // The step's epoch as kohya counts it, of the run's epochs.
            await Assertions.Expect(page.GetByTestId("run-figures")).ToContainTextAsync(new System.Text.RegularExpressions.Regex(@"Epoch \d+ of \d+"));
            await page.Locator("[data-testid=loss-chart] svg path").First.WaitForAsync(new() { State = WaitForSelectorState.Attached });
            var sample = page.GetByTestId("sample-image").First;
            await sample.WaitForAsync();
            await page.WaitForFunctionAsync("() => { const i = document.querySelector('[data-testid=sample-image]'); return i && i.complete && i.naturalWidth > 0; }");
            // The baseline at step 0; "Sample now" adds the next step's.
            await Assertions.Expect(page.GetByTestId("sample-image")).ToHaveCountAsync(1);
            await page.GetByTestId("sample-now").ClickAsync();
            await Assertions.Expect(page.GetByTestId("sample-image")).ToHaveCountAsync(2, new() { Timeout = 120_000 });
            await Assertions.Expect(page.GetByTestId("run-log")).ToContainTextAsync("sampled step");
            await page.WaitForFunctionAsync("() => [...document.querySelectorAll('[data-testid=sample-image]')].every(i => i.complete && i.naturalWidth > 0)");
            await PointsAsync(chart, atLeast: first + 5);
            await session.ScreenshotAsync("run");

            await page.GetByTestId("cancel-run").ClickAsync();
            await Assertions.Expect(page.GetByTestId("run-state")).ToHaveTextAsync("cancelled", new() { Timeout = 60_000 });
            await Assertions.Expect(page.GetByTestId("resume-run")).ToBeVisibleAsync();
            await session.AssertNoErrorsAsync();
        }

        await using (var session = await SignedInAsync(browser, appliance, bob))
        {
            await session.GoToAsync($"/runs/{run.Id}");
            await session.Page.GetByTestId("run-not-found").WaitForAsync();
            Assert.Equal(0, await session.Page.GetByTestId("loss-chart").CountAsync());
            await session.GoToAsync("/runs");
            await session.Page.GetByTestId("no-runs").WaitForAsync();
            await session.AssertNoErrorsAsync();
        }
    }

    private static async Task<BrowserPage> SignedInAsync(Browser browser, LiveAppliance appliance, TestUser user)
    {
        var session = await browser.NewPageAsync(appliance.Address);
        await session.SignInAsync(user);
        return session;
    }

    private static async Task<long> StepAsync(JobService jobs, TestUser owner, Guid id, long atLeast)
    {
        var deadline = DateTime.UtcNow.AddMinutes(3);
        while (true)
        {
            var job = await jobs.GetAsync(new Caller(owner.Id, IsAdmin: false), id, CancellationToken.None);
            Assert.NotNull(job);
            if (job.Step >= atLeast) return job.Step;
            Assert.True(DateTime.UtcNow < deadline && !JobStates.IsFinal(job.State), $"the run is at step {job.Step} ({job.State}), waited for {atLeast}");
            await Task.Delay(100);
        }
    }

    /// <summary>Waits until the chart has at least <paramref name="atLeast"/> points and returns how many it has.</summary>
    private static async Task<int> PointsAsync(ILocator chart, int atLeast)
    {
        await Assertions.Expect(chart).ToHaveAttributeAsync("data-points", new System.Text.RegularExpressions.Regex(@"^\d+$"), new() { Timeout = 120_000 });
        var deadline = DateTime.UtcNow.AddMinutes(3);
        while (true)
        {
            var points = int.Parse(await chart.GetAttributeAsync("data-points") ?? "0", System.Globalization.CultureInfo.InvariantCulture);
            if (points >= atLeast) return points;
            Assert.True(DateTime.UtcNow < deadline, $"the loss chart has {points} points, waited for {atLeast}");
            await Task.Delay(200);
        }
    }
}
