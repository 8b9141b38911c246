using System.Net;
using System.Net.Http.Headers;
using Microsoft.Playwright;

namespace SdAppliance.Web.Tests.EndToEnd;

/// <summary>The login, the users page (admins only) and the account page's API tokens in a real browser.</summary>
public sealed class AccountPagesTests
{
    private static async Task<BrowserPage> SignInAsync(Browser browser, LiveAppliance appliance, TestUser user, string? screenshot = null)
    {
        var session = await browser.NewPageAsync(appliance.Address);
        var page = session.Page;
        await page.GotoAsync("/login");
        await page.GetByLabel("Name").FillAsync(user.Name);
        await page.GetByLabel("Password", new() { Exact = true }).FillAsync(user.Password);
        if (screenshot is not null) await session.ScreenshotAsync(screenshot);
        await page.GetByRole(AriaRole.Button, new() { Name = "Sign in" }).ClickAsync();
        await session.WaitForCircuitAsync();
        return session;
    }

    /// <summary>A MudBlazor field's input, wherever the field puts its data-testid (its root or the input).</summary>
    private static ILocator Field(IPage page, string testId) =>
        page.Locator($"[data-testid={testId}] input, input[data-testid={testId}]").First;

    [Fact]
    public async Task A_user_who_is_not_admin_is_kept_off_the_users_page_where_an_admin_adds_a_user()
    {
        using var appliance = new LiveAppliance();
        var admin = await appliance.CreateUserAsync(admin: true);
        var user = await appliance.CreateUserAsync();
        await using var browser = await Browser.LaunchAsync();

        await using (var plain = await SignInAsync(browser, appliance, user, screenshot: "login"))
        {
            await plain.GoToAsync("/admin/users");
            await plain.Page.GetByTestId("not-allowed").WaitForAsync();
            Assert.Equal(0, await plain.Page.GetByTestId("user-list").CountAsync());
            Assert.DoesNotContain(admin.Name, await plain.Page.ContentAsync());
            await plain.AssertNoErrorsAsync();
        }

        await using var session = await SignInAsync(browser, appliance, admin);
        var page = session.Page;
        await session.GoToAsync("/admin/users");
        await page.Locator($"[data-testid=user-row][data-user='{user.Name}']").WaitForAsync();
        await Field(page, "new-user-name").FillAsync("newcomer");
        await Field(page, "new-user-password").FillAsync("Newcomer-pass-1");
        await page.GetByTestId("add-user").ClickAsync();
        var added = page.Locator("[data-testid=user-row][data-user='newcomer']");
        await added.WaitForAsync();
        Assert.Contains("user", await added.InnerTextAsync());
        await session.ScreenshotAsync("users");
        await session.AssertNoErrorsAsync();

        // The new account works: its user signs in and reaches the dashboard.
        await using var newcomer = await SignInAsync(browser, appliance, new TestUser("", "newcomer", "Newcomer-pass-1"));
        Assert.Equal("/", new Uri(newcomer.Page.Url).AbsolutePath);
        await newcomer.AssertNoErrorsAsync();
    }

    [Fact]
    public async Task The_account_page_shows_a_new_token_once_and_revokes_it()
    {
        using var appliance = new LiveAppliance();
        var user = await appliance.CreateUserAsync();
        await using var browser = await Browser.LaunchAsync();
        await using var session = await SignInAsync(browser, appliance, user);
        var page = session.Page;

        await session.GoToAsync("/account");
        await Field(page, "token-name").FillAsync("my-script");
        await page.GetByTestId("create-token").ClickAsync();
        var secret = (await page.GetByTestId("new-token-secret").InnerTextAsync()).Trim();
        Assert.StartsWith("sda_", secret, StringComparison.Ordinal);
        Assert.Contains("will not be shown again", await page.GetByTestId("new-token").InnerTextAsync());
        await page.GetByTestId("copy-token").ClickAsync();
        await page.GetByText("Cop", new() { Exact = false }).Last.WaitForAsync();
        await session.ScreenshotAsync("account");

        using var client = new HttpClient { BaseAddress = appliance.Address };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", secret);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/api/v1/tokens")).StatusCode);

        await page.GetByTestId("revoke-token").ClickAsync();
        await page.GetByTestId("confirm-revoke").ClickAsync();
        await page.GetByTestId("token-revoked").WaitForAsync();
        Assert.Equal(0, await page.GetByTestId("new-token").CountAsync());
        Assert.Equal(HttpStatusCode.Unauthorized, (await client.GetAsync("/api/v1/tokens")).StatusCode);

        // Shown once: the page opened again lists the token by its start only.
        await session.GoToAsync("/account");
        await page.GetByTestId("token-row").WaitForAsync();
        Assert.DoesNotContain(secret, await page.ContentAsync());

        // Signing out from the user menu ends the session: the pages send the browser to the login again.
        await page.GetByTestId("user-menu").Locator("button").First.ClickAsync();
        await page.GetByTestId("sign-out").ClickAsync();
        await page.WaitForURLAsync(url => new Uri(url).AbsolutePath == "/login");
        await page.GotoAsync("/account");
        Assert.Equal("/login", new Uri(page.Url).AbsolutePath);
        await session.AssertNoErrorsAsync();
    }
}
