namespace SdAppliance.Web.Tests.EndToEnd;

/// <summary>The first visit of a fresh appliance in a real browser: setup, then the dashboard over a live circuit.</summary>
public sealed class SmokeTests
{
    [Fact]
    public async Task FirstVisitCreatesTheAdminAndOpensTheDashboard()
    {
        using var appliance = new LiveAppliance();
        await using var browser = await Browser.LaunchAsync();
        await using var session = await browser.NewPageAsync(appliance.Address);
        var page = session.Page;

        await page.GotoAsync("/");
        Assert.EndsWith("/setup", new Uri(page.Url).AbsolutePath, StringComparison.Ordinal);
        await page.GetByLabel("Name").FillAsync("boss");
        await page.GetByLabel("Password", new() { Exact = true }).FillAsync("Secret-pass-123");
        await page.GetByLabel("Password again").FillAsync("Secret-pass-123");
        await session.ScreenshotAsync("setup");
        await page.GetByRole(Microsoft.Playwright.AriaRole.Button, new() { Name = "Create the admin" }).ClickAsync();

        await session.WaitForCircuitAsync();
        Assert.Equal("/", new Uri(page.Url).AbsolutePath);
        await page.GetByRole(Microsoft.Playwright.AriaRole.Heading, new() { Name = "Dashboard" }).WaitForAsync();
        await page.GetByTestId("queue-count").WaitForAsync();
        // dashboard.png is DashboardPageTests' (a dashboard with jobs); this one is the fresh install's.
        await session.ScreenshotAsync("first-visit");
        await session.AssertNoErrorsAsync();

        // On a wide monitor the drawer stays open beside the page, which spreads to the width.
        await using var wide = await browser.NewPageAsync(appliance.Address, width: 2560, height: 1440);
        await wide.SignInAsync("boss", "Secret-pass-123");
        await wide.Page.Locator(".mud-drawer--open").WaitForAsync();
        var content = await wide.Page.Locator(".mud-main-content").BoundingBoxAsync();
        Assert.True(content is { Width: > 2000 }, $"the page is {content?.Width} px wide on a 2560 px screen");
        await wide.ScreenshotAsync("first-visit-wide");
        await wide.AssertNoErrorsAsync();
    }
}
