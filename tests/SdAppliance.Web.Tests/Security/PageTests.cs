using System.Net;
using Microsoft.AspNetCore.Hosting;
using SdAppliance.Appliance.Accounts;

namespace SdAppliance.Web.Tests.Security;

/// <summary>The setup, login and logout pages: the first admin, the sign-in cookie, antiforgery, lockout, the rate limit.</summary>
public sealed class PageTests
{
    private static Dictionary<string, string> Credentials(string name, string password) => new() { ["name"] = name, ["password"] = password };

    [Fact]
    public async Task A_fresh_install_sends_pages_to_setup_and_APIs_say_to_finish_it()
    {
        await using var factory = new ApplianceFactory();
        using var client = factory.Anonymous();

        using var page = await client.GetAsync("/");
        Assert.Equal(HttpStatusCode.Redirect, page.StatusCode);
        Assert.Equal("/setup", page.Headers.Location?.OriginalString);
        Assert.Equal("/setup", (await client.GetAsync("/login")).Headers.Location?.OriginalString);

        using var api = await client.GetAsync("/api/v1/tokens");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, api.StatusCode);
        Assert.Contains("/setup", (await api.JsonAsync()).GetProperty("detail").GetString());

        using var a1111 = await client.GetAsync("/sdapi/v1/options");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, a1111.StatusCode);
        Assert.Contains("/setup", await a1111.DetailAsync());
    }

    [Fact]
    public async Task Setup_creates_the_admin_signs_them_in_and_then_closes()
    {
        await using var factory = new ApplianceFactory();
        using var browser = factory.Anonymous();

        using var mismatch = await browser.PostFormAsync("/setup", new Dictionary<string, string>
            { ["name"] = "root", ["password"] = "Root-pass-1", ["confirm"] = "Root-pass-2" });
        Assert.Equal(HttpStatusCode.BadRequest, mismatch.StatusCode);
        Assert.Contains("differ", await mismatch.Content.ReadAsStringAsync());

        using var done = await browser.PostFormAsync("/setup", new Dictionary<string, string>
            { ["name"] = "root", ["password"] = "Root-pass-1", ["confirm"] = "Root-pass-1" });
        Assert.Equal(HttpStatusCode.Redirect, done.StatusCode);
        Assert.Equal("/", done.Headers.Location?.OriginalString);

        // The cookie signs the browser in, as an admin.
        Assert.Equal(HttpStatusCode.OK, (await browser.GetAsync("/api/v1/users")).StatusCode);

        // A second setup is refused: it goes to the login, and no second admin appears.
        using var other = factory.Anonymous();
        Assert.Equal("/login", (await other.GetAsync("/setup")).Headers.Location?.OriginalString);
        using var admin = await factory.CreateSignedInClientAsync(admin: true);
        var names = (await (await admin.GetAsync("/api/v1/users")).JsonAsync()).EnumerateArray().Select(u => u.GetProperty("name").GetString());
        Assert.Single(names, n => n == "root");
    }

    [Fact]
    public async Task Login_sets_the_cookie_and_logout_ends_it()
    {
        await using var factory = new ApplianceFactory();
        var user = await factory.CreateUserAsync();
        using var browser = factory.Anonymous();

        using var redirected = await browser.GetAsync("/logout");
        Assert.Equal(HttpStatusCode.Redirect, redirected.StatusCode);
        Assert.StartsWith("/login", redirected.Headers.Location?.OriginalString);

        using var wrong = await browser.PostFormAsync("/login", Credentials(user.Name, "Not-the-password-1"));
        Assert.Equal(HttpStatusCode.Unauthorized, wrong.StatusCode);

        using var login = await browser.PostFormAsync("/login", new Dictionary<string, string>(Credentials(user.Name, user.Password)) { ["returnUrl"] = "//evil.example/" });
        Assert.Equal(HttpStatusCode.Redirect, login.StatusCode);
        Assert.Equal("/", login.Headers.Location?.OriginalString);
        Assert.Equal(HttpStatusCode.OK, (await browser.GetAsync("/api/v1/tokens")).StatusCode);

        using var logout = await browser.PostFormAsync("/logout", new Dictionary<string, string>());
        Assert.Equal(HttpStatusCode.Redirect, logout.StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await browser.GetAsync("/api/v1/tokens")).StatusCode);
    }

    [Fact]
    public async Task A_form_post_without_its_antiforgery_token_is_refused()
    {
        await using var factory = new ApplianceFactory();
        var user = await factory.CreateUserAsync();
        using var browser = factory.Anonymous();
        await browser.GetStringAsync("/login");  // the antiforgery cookie, but not the form's field

        using var response = await browser.PostAsync("/login", new FormUrlEncodedContent(Credentials(user.Name, user.Password)));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await browser.GetAsync("/api/v1/tokens")).StatusCode);
    }

    [Fact]
    public async Task Repeated_wrong_passwords_lock_the_account_even_for_the_right_one()
    {
        await using var factory = new ApplianceFactory();
        var user = await factory.CreateUserAsync();

        for (var i = 0; i < AccountLockout.MaxFailedAttempts; i++)
        {
            using var wrong = factory.WithBasic(user.Name, "Wrong-pass-" + i);
            using var refused = await wrong.GetAsync("/sdapi/v1/sd-models");
            Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
        }

        using var right = factory.WithBasic(user.Name, user.Password);
        using var locked = await right.GetAsync("/sdapi/v1/sd-models");
        Assert.Equal(HttpStatusCode.Unauthorized, locked.StatusCode);
        Assert.Equal(AccountLockout.Message, await locked.DetailAsync());

        using var browser = factory.Anonymous();
        using var page = await browser.PostFormAsync("/login", Credentials(user.Name, user.Password));
        Assert.Equal(HttpStatusCode.Unauthorized, page.StatusCode);
        Assert.Contains("locked", await page.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Sign_in_posts_beyond_the_rate_limit_are_answered_429()
    {
        await using var parent = new ApplianceFactory();
        var factory = parent.WithWebHostBuilder(b => b.UseSetting("Security:LoginAttemptsPerMinute", "3"));
        using var browser = factory.CreateClient(new Microsoft.AspNetCore.Mvc.Testing.WebApplicationFactoryClientOptions { AllowAutoRedirect = false });
        await parent.CreateUserAsync();  // the same data folder: setup is done

        for (var i = 0; i < 3; i++)
        {
            using var wrong = await browser.PostFormAsync("/login", Credentials("nobody", "Wrong-pass-1"));
            Assert.Equal(HttpStatusCode.Unauthorized, wrong.StatusCode);
        }

        using var limited = await browser.PostFormAsync("/login", Credentials("nobody", "Wrong-pass-1"));
        Assert.Equal(HttpStatusCode.TooManyRequests, limited.StatusCode);
    }
}
