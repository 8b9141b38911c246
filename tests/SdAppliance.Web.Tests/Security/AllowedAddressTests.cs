using System.Net;
using System.Net.Http.Json;
using Microsoft.AspNetCore.Http;
using SdAppliance.Appliance.Accounts;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Web.Security;

namespace SdAppliance.Web.Tests.Security;

/// <summary>Client addresses the admin allows without credentials: the A1111 routes only, as the built-in account, off by default.</summary>
public sealed class AllowedAddressTests
{
    private static readonly IPAddress Allowed = IPAddress.Parse("192.168.7.20");

    private static Task<HttpContext> GetAsync(ApplianceFactory factory, string path, IPAddress from) =>
        factory.Server.SendAsync(context =>
        {
            context.Request.Method = HttpMethods.Get;
            context.Request.Path = path;
            context.Connection.RemoteIpAddress = from;
        });

    [Fact]
    public async Task An_allowed_address_uses_the_A1111_routes_as_the_built_in_account_and_nothing_else()
    {
        await using var factory = new ApplianceFactory();
        using var admin = await factory.CreateSignedInClientAsync(admin: true);

        Assert.Equal(StatusCodes.Status401Unauthorized, (await GetAsync(factory, "/sdapi/v1/sd-models", Allowed)).Response.StatusCode);

        using var set = await admin.PutAsJsonAsync("/api/v1/security/allowed-addresses", new { addresses = new[] { "192.168.7.0/24", "fd00::5" } });
        Assert.Equal(HttpStatusCode.OK, set.StatusCode);

        var a1111 = await GetAsync(factory, "/sdapi/v1/sd-models", Allowed);
        Assert.Equal(StatusCodes.Status200OK, a1111.Response.StatusCode);
        Assert.Equal(new Caller(AccountService.LanClientsId, IsAdmin: false), a1111.User.ToCaller());

        var mapped = await GetAsync(factory, "/sdapi/v1/sd-models", Allowed.MapToIPv6());
        Assert.Equal(AccountService.LanClientsId, mapped.User.ToCaller().UserId);
        Assert.Equal(AccountService.LanClientsId, (await GetAsync(factory, "/sdapi/v1/sd-models", IPAddress.Parse("fd00::5"))).User.ToCaller().UserId);

        Assert.Equal(StatusCodes.Status401Unauthorized, (await GetAsync(factory, "/sdapi/v1/sd-models", IPAddress.Parse("192.168.8.20"))).Response.StatusCode);
        Assert.Equal(StatusCodes.Status401Unauthorized, (await GetAsync(factory, "/api/v1/tokens", Allowed)).Response.StatusCode);
        Assert.Equal(StatusCodes.Status302Found, (await GetAsync(factory, "/", Allowed)).Response.StatusCode);
    }

    [Fact]
    public async Task A_bad_entry_is_refused_naming_it_and_changes_nothing()
    {
        await using var factory = new ApplianceFactory();
        using var admin = await factory.CreateSignedInClientAsync(admin: true);
        using var user = await factory.CreateSignedInClientAsync();

        using var bad = await admin.PutAsJsonAsync("/api/v1/security/allowed-addresses", new { addresses = new[] { "10.0.0.1", "10.0.0.300" } });
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        var problem = await bad.JsonAsync();
        Assert.Equal("addresses", problem.GetProperty("field").GetString());
        Assert.Contains("10.0.0.300", problem.GetProperty("detail").GetString());

        var list = (await (await admin.GetAsync("/api/v1/security/allowed-addresses")).JsonAsync()).GetProperty("addresses");
        Assert.Equal(0, list.GetArrayLength());
        Assert.Equal(HttpStatusCode.Forbidden, (await user.PutAsJsonAsync("/api/v1/security/allowed-addresses", new { addresses = new[] { "10.0.0.1" } })).StatusCode);
    }
}
