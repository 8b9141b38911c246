using System.Net.Http.Headers;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;
using SdAppliance.Appliance.Accounts;

namespace SdAppliance.Web.Tests;

/// <summary>The appliance host on a fresh data folder (a real SQLite file) with the demo model of the repository.</summary>
public class ApplianceFactory : WebApplicationFactory<Program>
{
    public string DataFolder { get; } = Directory.CreateTempSubdirectory("sdapp-web-").FullName;

    protected override void ConfigureWebHost(IWebHostBuilder builder) => builder.UseSetting("data", DataFolder);

    /// <summary>A new user with a password that meets the rules (an admin when <paramref name="admin"/>), made through <see cref="AccountService"/>.</summary>
    public async Task<TestUser> CreateUserAsync(bool admin = false)
    {
        var name = (admin ? "admin-" : "user-") + Guid.NewGuid().ToString("N")[..12];
        var password = "Pw-" + Guid.NewGuid().ToString("N");
        await using var scope = Services.CreateAsyncScope();
        var account = await scope.ServiceProvider.GetRequiredService<AccountService>().CreateUserAsync(name, password, admin, CancellationToken.None);
        return new TestUser(account.Id, name, password);
    }

    /// <summary>A new API token of the user (its whole secret).</summary>
    public async Task<string> CreateTokenAsync(string userId, string name = "tests")
    {
        await using var scope = Services.CreateAsyncScope();
        return (await scope.ServiceProvider.GetRequiredService<AccountService>().CreateTokenAsync(userId, name, CancellationToken.None)).Secret;
    }

    /// <summary>A client signed in as a new user (an admin when <paramref name="admin"/>) with their own Bearer token.</summary>
    public HttpClient CreateSignedInClient(bool admin = false) => CreateSignedInClientAsync(admin).GetAwaiter().GetResult();

    /// <inheritdoc cref="CreateSignedInClient"/>
    public async Task<HttpClient> CreateSignedInClientAsync(bool admin = false)
    {
        var user = await CreateUserAsync(admin);
        var client = CreateClient(new WebApplicationFactoryClientOptions { AllowAutoRedirect = false });
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", await CreateTokenAsync(user.Id));
        return client;
    }

    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (disposing && Directory.Exists(DataFolder)) Directory.Delete(DataFolder, recursive: true);
    }
}

/// <summary>A user the tests made, with the password they sign in with.</summary>
public sealed record TestUser(string Id, string Name, string Password);
