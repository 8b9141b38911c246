using System.Net;
using System.Net.Http.Json;
using Microsoft.Extensions.DependencyInjection;
using SdAppliance.Appliance.Accounts;

namespace SdAppliance.Web.Tests.Security;

/// <summary>Bearer tokens and HTTP Basic on both APIs, and what a refusal looks like on each.</summary>
public sealed class CredentialTests : IAsyncLifetime
{
    private const string A1111Path = "/sdapi/v1/sd-models";

    private readonly ApplianceFactory factory = new();
    private TestUser user = null!;

    public async Task InitializeAsync() => user = await factory.CreateUserAsync();

    public async Task DisposeAsync() => await factory.DisposeAsync();

    private async Task<IReadOnlyList<TokenView>> TokensAsync()
    {
        await using var scope = factory.Services.CreateAsyncScope();
        return await scope.ServiceProvider.GetRequiredService<AccountService>().ListTokensAsync(user.Id, CancellationToken.None);
    }

    [Fact]
    public async Task Bearer_and_Basic_get_in_on_the_REST_API_as_the_user()
    {
        var token = await factory.CreateTokenAsync(user.Id, "script");
        using var bearer = factory.WithBearer(token);
        using var basic = factory.WithBasic(user.Name, user.Password);

        foreach (var client in new[] { bearer, basic })
        {
            using var response = await client.GetAsync("/api/v1/tokens");
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var listed = Assert.Single((await response.JsonAsync()).EnumerateArray());
            Assert.Equal("script", listed.GetProperty("name").GetString());
            Assert.Equal(token[..10], listed.GetProperty("prefix").GetString());
            Assert.False(listed.TryGetProperty("secret_hash", out _));
        }
    }

    [Fact]
    public async Task Bearer_and_Basic_get_in_on_the_A1111_API()
    {
        using var bearer = factory.WithBearer(await factory.CreateTokenAsync(user.Id));
        using var basic = factory.WithBasic(user.Name, user.Password);
        using var anonymous = factory.Anonymous();

        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.GetAsync(A1111Path)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await bearer.GetAsync(A1111Path)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await basic.GetAsync(A1111Path)).StatusCode);
    }

    [Fact]
    public async Task A_wrong_password_on_the_A1111_API_is_a_401_with_a_Basic_challenge_in_A1111s_shape()
    {
        using var client = factory.WithBasic(user.Name, user.Password + "x");
        using var response = await client.GetAsync(A1111Path);

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Contains(response.Headers.WwwAuthenticate, h => h.Scheme == "Basic");
        Assert.Equal("Incorrect username or password", await response.DetailAsync());
    }

    [Fact]
    public async Task No_credentials_on_the_A1111_API_is_a_401_with_a_Basic_challenge()
    {
        using var client = factory.Anonymous();
        using var response = await client.PostAsync("/sdapi/v1/txt2img", JsonContent.Create(new { prompt = "x" }));

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Contains(response.Headers.WwwAuthenticate, h => h.Scheme == "Basic");
        Assert.Equal("Not authenticated", await response.DetailAsync());
    }

    [Fact]
    public async Task No_credentials_on_the_REST_API_is_a_401_ProblemDetails()
    {
        using var client = factory.Anonymous();
        using var response = await client.GetAsync("/api/v1/tokens");

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = await response.JsonAsync();
        Assert.Equal(401, problem.GetProperty("status").GetInt32());
        Assert.Contains("Bearer", problem.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task After_a_password_change_the_old_Basic_credentials_are_refused()
    {
        using var old = factory.WithBasic(user.Name, user.Password);
        Assert.Equal(HttpStatusCode.OK, (await old.GetAsync("/api/v1/tokens")).StatusCode);  // verified once, so remembered

        using var change = await old.PutAsJsonAsync("/api/v1/account/password", new { current_password = user.Password, new_password = "Changed-pass-1" });
        Assert.Equal(HttpStatusCode.NoContent, change.StatusCode);

        Assert.Equal(HttpStatusCode.Unauthorized, (await old.GetAsync("/api/v1/tokens")).StatusCode);
        using var changed = factory.WithBasic(user.Name, "Changed-pass-1");
        Assert.Equal(HttpStatusCode.OK, (await changed.GetAsync("/api/v1/tokens")).StatusCode);
    }

    [Fact]
    public async Task A_password_change_with_a_wrong_current_password_is_refused_naming_the_field()
    {
        using var client = factory.WithBasic(user.Name, user.Password);
        using var change = await client.PutAsJsonAsync("/api/v1/account/password", new { current_password = "Wrong-pass-1", new_password = "Changed-pass-1" });

        Assert.Equal(HttpStatusCode.BadRequest, change.StatusCode);
        Assert.Equal("current_password", (await change.JsonAsync()).GetProperty("field").GetString());
    }

    [Fact]
    public async Task A_revoked_token_is_refused()
    {
        var token = await factory.CreateTokenAsync(user.Id);
        using var client = factory.WithBearer(token);
        var id = Assert.Single(await TokensAsync()).Id;

        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"/api/v1/tokens/{id}")).StatusCode);

        using var response = await client.GetAsync("/api/v1/tokens");
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Contains("revoked", (await response.JsonAsync()).GetProperty("detail").GetString());
        Assert.NotNull(Assert.Single(await TokensAsync()).RevokedUtc);
    }

    [Fact]
    public async Task A_token_unknown_to_the_appliance_is_refused()
    {
        var token = await factory.CreateTokenAsync(user.Id);
        using var client = factory.WithBearer(token[..^1] + (token[^1] == 'A' ? 'B' : 'A'));

        Assert.Equal(HttpStatusCode.Unauthorized, (await client.GetAsync("/api/v1/tokens")).StatusCode);
    }

    [Fact]
    public async Task Using_a_token_records_when_it_was_last_used()
    {
        var token = await factory.CreateTokenAsync(user.Id);
        var before = Assert.Single(await TokensAsync());
        Assert.Null(before.LastUsedUtc);

        using var client = factory.WithBearer(token);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/api/v1/tokens")).StatusCode);

        var after = Assert.Single(await TokensAsync());
        Assert.NotNull(after.LastUsedUtc);
        Assert.True(after.LastUsedUtc >= before.CreatedUtc, $"{after.LastUsedUtc:O} < {before.CreatedUtc:O}");
    }

    [Fact]
    public async Task A_token_made_through_the_API_is_shown_once_and_then_works()
    {
        using var client = factory.WithBasic(user.Name, user.Password);
        using var created = await client.PostAsJsonAsync("/api/v1/tokens", new { name = "open-webui" });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var secret = (await created.JsonAsync()).GetProperty("token").GetString()!;

        using var bearer = factory.WithBearer(secret);
        var listed = Assert.Single((await (await bearer.GetAsync("/api/v1/tokens")).JsonAsync()).EnumerateArray());
        Assert.Equal("open-webui", listed.GetProperty("name").GetString());
        Assert.DoesNotContain(secret, listed.GetRawText());
    }

    [Fact]
    public async Task A_token_without_a_name_is_refused_naming_the_field()
    {
        using var client = factory.WithBasic(user.Name, user.Password);
        using var response = await client.PostAsJsonAsync("/api/v1/tokens", new { name = " " });

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("name", (await response.JsonAsync()).GetProperty("field").GetString());
    }

    [Fact]
    public async Task Users_are_managed_by_admins_only()
    {
        using var plain = await factory.CreateSignedInClientAsync();
        using var admin = await factory.CreateSignedInClientAsync(admin: true);

        using var forbidden = await plain.GetAsync("/api/v1/users");
        Assert.Equal(HttpStatusCode.Forbidden, forbidden.StatusCode);
        Assert.Equal("application/problem+json", forbidden.Content.Headers.ContentType?.MediaType);

        using var weak = await admin.PostAsJsonAsync("/api/v1/users", new { name = "dave", password = "short" });
        Assert.Equal(HttpStatusCode.BadRequest, weak.StatusCode);
        Assert.Equal("password", (await weak.JsonAsync()).GetProperty("field").GetString());

        using var created = await admin.PostAsJsonAsync("/api/v1/users", new { name = "dave", password = "Dave-pass-1" });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var id = (await created.JsonAsync()).GetProperty("id").GetString();
        var names = (await (await admin.GetAsync("/api/v1/users")).JsonAsync()).EnumerateArray().Select(u => u.GetProperty("name").GetString()).ToList();
        Assert.Contains("dave", names);
        Assert.DoesNotContain(AccountService.LanClientsId, names);

        Assert.Equal(HttpStatusCode.NoContent, (await admin.DeleteAsync($"/api/v1/users/{id}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await admin.DeleteAsync($"/api/v1/users/{id}")).StatusCode);
        using var gone = factory.WithBasic("dave", "Dave-pass-1");
        Assert.Equal(HttpStatusCode.Unauthorized, (await gone.GetAsync("/api/v1/tokens")).StatusCode);
    }
}
