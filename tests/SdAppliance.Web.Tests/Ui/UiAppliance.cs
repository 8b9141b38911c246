using System.Security.Claims;
using System.Text.Json;
using Bunit;
using Bunit.TestDoubles;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using MudBlazor.Services;
using SdAppliance.Appliance;
using SdAppliance.Appliance.Accounts;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Persistence;
using SdAppliance.Web.Components;

namespace SdAppliance.Web.Tests.Ui;

/// <summary>
/// A bunit context over the appliance's real services on a temp data folder (no scheduler runs: submitted jobs stay
/// queued, and no runner checks their requests), with MudBlazor and a signed-in user the test chooses.
/// </summary>
public abstract class UiAppliance : IAsyncLifetime
{
    protected static readonly CancellationToken None = CancellationToken.None;
    private readonly string data = Directory.CreateTempSubdirectory("sdapp-ui-").FullName;
    private BunitAuthorizationContext auth = null!;

    protected BunitContext Ctx { get; } = new();

    public async Task InitializeAsync()
    {
        Ctx.JSInterop.Mode = JSRuntimeMode.Loose;
        Ctx.Services.AddMudServices();
        Ctx.Services.AddAppliance(new ApplianceOptions { DataFolder = data, Devices = ["cpu"] });
        Ctx.Services.RemoveAll<IJobRunner>();
        Ctx.Services.AddScoped<SignedInUser>();
        auth = Ctx.AddAuthorization();
        await DatabaseMigration.MigrateAsync(Ctx.Services, None);
    }

    public async Task DisposeAsync()
    {
        await Ctx.DisposeAsync();
        SqliteConnection.ClearAllPools();
        Directory.Delete(data, recursive: true);
    }

    protected async Task<AccountView> UserAsync(string name, bool admin = false)
    {
        await using var scope = Ctx.Services.CreateAsyncScope();
        return await scope.ServiceProvider.GetRequiredService<AccountService>().CreateUserAsync(name, name + "-Pass-123", admin, None);
    }

    protected async Task<IReadOnlyList<AccountView>> UsersAsync()
    {
        await using var scope = Ctx.Services.CreateAsyncScope();
        return await scope.ServiceProvider.GetRequiredService<AccountService>().ListUsersAsync(None);
    }

    /// <summary>Signs <paramref name="user"/> in for the components rendered next.</summary>
    protected void SignIn(AccountView user)
    {
        auth.SetAuthorized(user.Name);
        // Roles before claims: bunit's SetRoles keeps the name and roles only.
        if (user.IsAdmin) auth.SetRoles(Roles.Admin);
        auth.SetClaims(new Claim(ClaimTypes.NameIdentifier, user.Id));
    }

    protected Task<JobView> SubmitAsync(AccountView owner, string prompt) =>
        Ctx.Services.GetRequiredService<JobService>().SubmitAsync(
            new JobSubmission(JobKind.Generation, owner.Id, JsonSerializer.SerializeToElement(new { prompt })), None);
}
