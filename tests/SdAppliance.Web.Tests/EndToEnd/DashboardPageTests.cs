using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.Playwright;

namespace SdAppliance.Web.Tests.EndToEnd;

/// <summary>The dashboard in a real browser over real jobs on the demo model: live progress, an admin's reorder and cancel, the outputs.</summary>
public sealed class DashboardPageTests
{
    [Fact]
    public async Task An_admin_watches_a_running_job_reorders_the_queue_cancels_and_sees_the_outputs()
    {
        using var appliance = new LiveAppliance();
        var admin = await appliance.CreateUserAsync(admin: true);
        var user = await appliance.CreateUserAsync();
        using var api = new HttpClient { BaseAddress = appliance.Address };
        api.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", await appliance.CreateTokenAsync(user.Id));
        async Task<string> SubmitAsync(string prompt, int steps)
        {
            using var response = await api.PostAsJsonAsync("/api/v1/jobs/generation", new { prompt, steps, seed = 3 });
            response.EnsureSuccessStatusCode();
            return (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetString()!;
        }
        // One device: the long one runs, the other two wait behind it.
        var running = await SubmitAsync("a very long generation", steps: 5000);
        var first = await SubmitAsync("the first in the queue", steps: 1);
        var second = await SubmitAsync("the second in the queue", steps: 1);

        await using var browser = await Browser.LaunchAsync();
        await using var session = await browser.NewPageAsync(appliance.Address);
        var page = session.Page;
        await session.SignInAsync(admin);

        // Live progress: the step count of the running job goes up while the page is open.
        var job = page.Locator($"[data-testid=running-job][data-job='{running}']");
        await job.WaitForAsync();
        var step = job.GetByTestId("running-step");
        var before = await step.InnerTextAsync();
        await Assertions.Expect(step).Not.ToHaveTextAsync(before, new() { Timeout = 60_000 });
        Assert.Contains(user.Name, await job.InnerTextAsync());

        var rows = page.GetByTestId("queued-job");
        await Assertions.Expect(rows).ToHaveCountAsync(2);
        Assert.Equal(first, await rows.Nth(0).GetAttributeAsync("data-job"));
        await rows.Nth(1).GetByTestId("move-up").ClickAsync();
        await Assertions.Expect(rows.Nth(0)).ToHaveAttributeAsync("data-job", second);
        await session.ScreenshotAsync("dashboard");

        // Cancelled, the long one gives the device to the queue: both short ones run, and their images show.
        await job.GetByTestId("cancel-running").ClickAsync();
        await Assertions.Expect(page.GetByTestId("output")).ToHaveCountAsync(2, new() { Timeout = 120_000 });
        await page.GetByTestId("queue-empty").WaitForAsync();
        await session.AssertNoErrorsAsync();
    }
}
