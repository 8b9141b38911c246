using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Identity;
using Microsoft.Data.Sqlite;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using SdAppliance.Appliance.Accounts;
using SdAppliance.Appliance.Persistence;
using SdAppliance.Formats;

namespace SdAppliance.Appliance.Tests;

public sealed class AccountServiceTests : IAsyncLifetime
{
    private readonly string folder = Directory.CreateTempSubdirectory("sdapp-accounts-").FullName;
    private ServiceProvider services = null!;
    private AsyncServiceScope scope;

    private AccountService Accounts => scope.ServiceProvider.GetRequiredService<AccountService>();

    public async Task InitializeAsync()
    {
        services = new ServiceCollection().AddAppliance(new ApplianceOptions { DataFolder = folder }).BuildServiceProvider();
        await DatabaseMigration.MigrateAsync(services, CancellationToken.None);
        scope = services.CreateAsyncScope();
    }

    public async Task DisposeAsync()
    {
        await scope.DisposeAsync();
        await services.DisposeAsync();
        SqliteConnection.ClearAllPools();
        Directory.Delete(folder, recursive: true);
    }

    [Fact]
    public async Task Setup_is_needed_until_the_first_admin_and_then_refused()
    {
        var none = CancellationToken.None;
        Assert.True(await Accounts.IsSetupNeededAsync(none));  // the built-in LAN-client account does not count

        var admin = await Accounts.CreateFirstAdminAsync("root", "Root-pass-1", none);

        Assert.True(admin.IsAdmin);
        Assert.False(await Accounts.IsSetupNeededAsync(none));
        await Assert.ThrowsAsync<UserInputException>(() => Accounts.CreateFirstAdminAsync("second", "Root-pass-2", none));
        Assert.Equal([admin], await Accounts.ListUsersAsync(none));
    }

    [Fact]
    public async Task Only_the_hash_of_a_token_is_stored_and_the_token_finds_its_user()
    {
        var none = CancellationToken.None;
        var user = await Accounts.CreateUserAsync("erin", "Erin-pass-1", admin: false, none);
        var created = await Accounts.CreateTokenAsync(user.Id, "script", none);

        var stored = await scope.ServiceProvider.GetRequiredService<ApplianceDb>().ApiTokens.AsNoTracking().SingleAsync();
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(created.Secret))), stored.SecretHash);
        Assert.DoesNotContain(created.Secret, File.ReadAllText(Path.Combine(folder, "appliance.db")) + ReadIfThere(Path.Combine(folder, "appliance.db-wal")));
        Assert.True(created.Secret.Length > 40, created.Secret);
        Assert.Equal(created.Secret[..stored.Prefix.Length], stored.Prefix);

        Assert.Equal(user.Id, (await Accounts.ValidateTokenAsync(created.Secret, none))?.Id);
        Assert.Null(await Accounts.ValidateTokenAsync(created.Secret + "x", none));
        Assert.NotEqual(created.Secret, (await Accounts.CreateTokenAsync(user.Id, "second", none)).Secret);
    }

    [Fact]
    public async Task Revoking_is_for_the_owner_only_and_for_good()
    {
        var none = CancellationToken.None;
        var owner = await Accounts.CreateUserAsync("frank", "Frank-pass-1", admin: false, none);
        var other = await Accounts.CreateUserAsync("grace", "Grace-pass-1", admin: false, none);
        var token = await Accounts.CreateTokenAsync(owner.Id, "script", none);

        Assert.False(await Accounts.RevokeTokenAsync(other.Id, token.Token.Id, none));
        Assert.NotNull(await Accounts.ValidateTokenAsync(token.Secret, none));
        Assert.True(await Accounts.RevokeTokenAsync(owner.Id, token.Token.Id, none));
        Assert.Null(await Accounts.ValidateTokenAsync(token.Secret, none));
    }

    [Fact]
    public async Task The_last_admin_cannot_be_deleted_and_a_deleted_users_tokens_go_with_them()
    {
        var none = CancellationToken.None;
        var admin = await Accounts.CreateUserAsync("heidi", "Heidi-pass-1", admin: true, none);
        var user = await Accounts.CreateUserAsync("ivan", "Ivan-pass-1", admin: false, none);
        var token = await Accounts.CreateTokenAsync(user.Id, "script", none);

        var refusal = await Assert.ThrowsAsync<UserInputException>(() => Accounts.DeleteUserAsync(admin.Id, none));
        Assert.Contains("only admin", refusal.Message);
        await Assert.ThrowsAsync<UserInputException>(() => Accounts.DeleteUserAsync(AccountService.LanClientsId, none));

        Assert.True(await Accounts.DeleteUserAsync(user.Id, none));
        Assert.Null(await Accounts.ValidateTokenAsync(token.Secret, none));
        Assert.Empty(await scope.ServiceProvider.GetRequiredService<ApplianceDb>().ApiTokens.ToListAsync());
    }

    [Fact]
    public async Task An_admin_cannot_delete_themselves_but_can_delete_another_admin()
    {
        var none = CancellationToken.None;
        var heidi = await Accounts.CreateUserAsync("heidi", "Heidi-pass-1", admin: true, none);
        var ivan = await Accounts.CreateUserAsync("ivan", "Ivan-pass-1", admin: true, none);

        var own = await Assert.ThrowsAsync<UserInputException>(() => Accounts.DeleteUserAsync(heidi.Id, heidi.Id, none));
        Assert.Contains("your own account", own.Message);
        Assert.Equal(2, (await Accounts.ListUsersAsync(none)).Count);

        Assert.True(await Accounts.DeleteUserAsync(heidi.Id, ivan.Id, none));
        Assert.Equal([heidi], await Accounts.ListUsersAsync(none));
    }

    [Fact]
    public async Task The_admin_role_can_be_given_and_taken_but_the_last_admin_keeps_it()
    {
        var none = CancellationToken.None;
        var heidi = await Accounts.CreateUserAsync("heidi", "Heidi-pass-1", admin: true, none);
        var ivan = await Accounts.CreateUserAsync("ivan", "Ivan-pass-1", admin: false, none);
        var manager = scope.ServiceProvider.GetRequiredService<UserManager<ApplianceUser>>();

        var lastOne = await Assert.ThrowsAsync<UserInputException>(() => Accounts.SetAdminAsync(heidi.Id, admin: false, none));
        Assert.Equal("admin", lastOne.Subject);
        Assert.Contains("only admin", lastOne.Message);

        Assert.True((await Accounts.SetAdminAsync(ivan.Id, admin: true, none)).IsAdmin);
        var promoted = (await manager.FindByIdAsync(ivan.Id))!;
        Assert.Equal([Roles.Admin], await manager.GetRolesAsync(promoted));

        // Two admins now: either may lose the role, and the one who did is a plain user again.
        Assert.False((await Accounts.SetAdminAsync(heidi.Id, admin: false, none)).IsAdmin);
        Assert.Equal([Roles.User], await manager.GetRolesAsync((await manager.FindByIdAsync(heidi.Id))!));
        Assert.Equal([new AccountView(heidi.Id, "heidi", false), new AccountView(ivan.Id, "ivan", true)], await Accounts.ListUsersAsync(none));

        await Assert.ThrowsAsync<UserInputException>(() => Accounts.SetAdminAsync(ivan.Id, admin: false, none));
        await Assert.ThrowsAsync<UserInputException>(() => Accounts.SetAdminAsync("no-such-user", admin: true, none));
        await Assert.ThrowsAsync<UserInputException>(() => Accounts.SetAdminAsync(AccountService.LanClientsId, admin: true, none));
    }

    [Fact]
    public async Task Identitys_refusals_name_the_field()
    {
        var none = CancellationToken.None;
        var weak = await Assert.ThrowsAsync<UserInputException>(() => Accounts.CreateUserAsync("judy", "short", admin: false, none));
        Assert.Equal("password", weak.Subject);

        await Accounts.CreateUserAsync("judy", "Judy-pass-1", admin: false, none);
        var taken = await Assert.ThrowsAsync<UserInputException>(() => Accounts.CreateUserAsync("judy", "Judy-pass-2", admin: false, none));
        Assert.Equal("name", taken.Subject);
        var bad = await Assert.ThrowsAsync<UserInputException>(() => Accounts.CreateUserAsync("ju:dy", "Judy-pass-2", admin: false, none));
        Assert.Equal("name", bad.Subject);
    }

    [Fact]
    public async Task A_changed_password_replaces_the_old_one()
    {
        var none = CancellationToken.None;
        var user = await Accounts.CreateUserAsync("ken", "Ken-pass-1", admin: false, none);
        var manager = scope.ServiceProvider.GetRequiredService<UserManager<ApplianceUser>>();

        Assert.Equal("current_password", (await Assert.ThrowsAsync<UserInputException>(() => Accounts.ChangePasswordAsync(user.Id, "Wrong-pass-1", "Ken-pass-2", none))).Subject);
        Assert.Equal("new_password", (await Assert.ThrowsAsync<UserInputException>(() => Accounts.ChangePasswordAsync(user.Id, "Ken-pass-1", "short", none))).Subject);
        await Accounts.ChangePasswordAsync(user.Id, "Ken-pass-1", "Ken-pass-2", none);

        var stored = (await manager.FindByIdAsync(user.Id))!;
        Assert.False(await manager.CheckPasswordAsync(stored, "Ken-pass-1"));
        Assert.True(await manager.CheckPasswordAsync(stored, "Ken-pass-2"));
    }

    [Fact]
    public async Task Allowed_addresses_take_addresses_and_ranges_and_refuse_anything_else()
    {
        var allowed = services.GetRequiredService<AllowedClientAddresses>();
        Assert.False(await allowed.AllowsAsync(System.Net.IPAddress.Loopback, CancellationToken.None));  // off by default

        await allowed.SetAsync(["10.1.0.0/16", " 192.168.1.20 "], CancellationToken.None);

        Assert.True(await allowed.AllowsAsync(System.Net.IPAddress.Parse("10.1.200.3"), CancellationToken.None));
        Assert.True(await allowed.AllowsAsync(System.Net.IPAddress.Parse("::ffff:192.168.1.20"), CancellationToken.None));
        Assert.False(await allowed.AllowsAsync(System.Net.IPAddress.Parse("192.168.1.21"), CancellationToken.None));
        foreach (var bad in new[] { "10.1.0.0/33", "printer.local", "10.1.0.0/" })
        {
            var refusal = await Assert.ThrowsAsync<UserInputException>(() => allowed.SetAsync(["10.9.0.0/16", bad], CancellationToken.None));
            Assert.Equal("addresses", refusal.Subject);
            Assert.Contains($"'{bad}'", refusal.Message);
        }
        Assert.Equal(["10.1.0.0/16", "192.168.1.20"], await allowed.GetAsync(CancellationToken.None));

        // Kept in the database: a new process (a fresh service) reads the same list.
        await using var again = new ServiceCollection().AddAppliance(new ApplianceOptions { DataFolder = folder }).BuildServiceProvider();
        Assert.Equal(["10.1.0.0/16", "192.168.1.20"], await again.GetRequiredService<AllowedClientAddresses>().GetAsync(CancellationToken.None));
    }

    private static string ReadIfThere(string path) => File.Exists(path) ? File.ReadAllText(path) : "";
}
