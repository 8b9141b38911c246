using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Identity;
using Microsoft.EntityFrameworkCore;
using SdAppliance.Appliance.Persistence;
using SdAppliance.Formats;

namespace SdAppliance.Appliance.Accounts;

/// <summary>
/// Users (ASP.NET Core Identity: its password hasher, rules and lockout) and their personal API tokens. Scoped: one per
/// request or command. The web host, the UI and the CLI all go through here.
/// </summary>
public sealed class AccountService(UserManager<ApplianceUser> users, ApplianceDb db, TimeProvider time)
{
    /// <summary>The built-in account requests from allowed client addresses act as (the A1111 routes only); not an admin, cannot sign in.</summary>
    public const string LanClientsId = "lan-clients";

    public const int MaxTokenNameLength = 100;

    /// <summary>Every token starts so, which tells it apart from a password and lets a secret scanner find a leaked one.</summary>
    public const string TokenPrefix = "sda_";

    private const int SecretBytes = 32;
    private const int VisiblePrefixLength = 10;

    // Two setup requests at once must not make two first admins.
    private static readonly SemaphoreSlim SetupLock = new(1, 1);

    // Two admins taken away at once (deleted, or the role removed) must not leave none.
    private static readonly SemaphoreSlim AdminLock = new(1, 1);

    private IQueryable<ApplianceUser> People => db.Users.Where(u => u.Id != LanClientsId);

    /// <summary>True on a fresh install: nobody has an account yet, the first request goes to setup.</summary>
    public async Task<bool> IsSetupNeededAsync(CancellationToken cancellationToken) => !await People.AnyAsync(cancellationToken);

    /// <summary>Makes the first admin; refused once anyone has an account.</summary>
    public async Task<AccountView> CreateFirstAdminAsync(string name, string password, CancellationToken cancellationToken)
    {
        await SetupLock.WaitAsync(cancellationToken);
        try
        {
            if (!await IsSetupNeededAsync(cancellationToken))
                throw new UserInputException(null, "setup is already done: the appliance has its admin", "sign in, and ask an admin for an account");
            return await CreateUserAsync(name, password, admin: true, cancellationToken);
        }
        finally
        {
            SetupLock.Release();
        }
    }

    public async Task<AccountView> CreateUserAsync(string name, string password, bool admin, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        if (string.IsNullOrWhiteSpace(name)) throw new UserInputException("name", "is empty", "give the user a name");
        if (string.IsNullOrEmpty(password)) throw new UserInputException("password", "is empty", "give the user a password");

        var user = new ApplianceUser { UserName = name };
        Check(await users.CreateAsync(user, password));
        var role = admin ? Roles.Admin : Roles.User;
        Check(await users.AddToRoleAsync(user, role));
        return new AccountView(user.Id, name, admin);
    }

    /// <summary>Everyone with an account, by name (not the built-in LAN-client account).</summary>
    public async Task<IReadOnlyList<AccountView>> ListUsersAsync(CancellationToken cancellationToken)
    {
        var admins = db.UserRoles.Where(r => r.RoleId == Roles.Admin).Select(r => r.UserId);
        return await People.OrderBy(u => u.UserName)
            .Select(u => new AccountView(u.Id, u.UserName!, admins.Contains(u.Id)))
            .ToListAsync(cancellationToken);
    }

    /// <summary>The user called <paramref name="name"/>, or null.</summary>
    public async Task<AccountView?> FindByNameAsync(string name, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var user = await users.FindByNameAsync(name);
        return user is null || user.Id == LanClientsId ? null : new AccountView(user.Id, user.UserName!, await users.IsInRoleAsync(user, Roles.Admin));
    }

    /// <summary>Deletes the user and their tokens; false when there is no such user. The last admin cannot be deleted.</summary>
    public async Task<bool> DeleteUserAsync(string id, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        if (id == LanClientsId) throw new UserInputException("id", $"'{id}' is the built-in account of allowed client addresses", "clear the allowed addresses instead");
        await AdminLock.WaitAsync(cancellationToken);
        try
        {
            if (await users.FindByIdAsync(id) is not { } user) return false;
            if (await users.IsInRoleAsync(user, Roles.Admin) && (await users.GetUsersInRoleAsync(Roles.Admin)).Count == 1)
                throw new UserInputException("id", $"'{user.UserName}' is the only admin", "make another admin first");
            Check(await users.DeleteAsync(user));
            return true;
        }
        finally
        {
            AdminLock.Release();
        }
    }

    /// <summary>
    /// <see cref="DeleteUserAsync(string, CancellationToken)"/> on behalf of the admin <paramref name="byUserId"/>, who
    /// cannot delete their own account (they would lock themselves out mid-session).
    /// </summary>
    public Task<bool> DeleteUserAsync(string byUserId, string id, CancellationToken cancellationToken) =>
        byUserId == id
            ? throw new UserInputException("id", "is your own account", "ask another admin to delete it, or sign in as another admin")
            : DeleteUserAsync(id, cancellationToken);

    /// <summary>
    /// Makes the user an admin or takes the role away (they become a plain user); the last admin keeps it. Their
    /// signed-in sessions pick the change up at the next security-stamp check (within a minute).
    /// </summary>
    public async Task<AccountView> SetAdminAsync(string id, bool admin, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        if (id == LanClientsId) throw new UserInputException("id", $"'{id}' is the built-in account of allowed client addresses", "it cannot be an admin");
        await AdminLock.WaitAsync(cancellationToken);
        try
        {
            var user = await users.FindByIdAsync(id) ?? throw new UserInputException("id", $"there is no user '{id}'", "reload the list of users");
            var isAdmin = await users.IsInRoleAsync(user, Roles.Admin);
            if (isAdmin == admin) return new AccountView(user.Id, user.UserName!, admin);
            if (!admin && (await users.GetUsersInRoleAsync(Roles.Admin)).Count == 1)
                throw new UserInputException("admin", $"'{user.UserName}' is the only admin", "make another admin first");
            var (add, remove) = admin ? (Roles.Admin, Roles.User) : (Roles.User, Roles.Admin);
            Check(await users.AddToRoleAsync(user, add));
            if (await users.IsInRoleAsync(user, remove)) Check(await users.RemoveFromRoleAsync(user, remove));
            return new AccountView(user.Id, user.UserName!, admin);
        }
        finally
        {
            AdminLock.Release();
        }
    }

    public async Task ChangePasswordAsync(string userId, string currentPassword, string newPassword, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var user = await users.FindByIdAsync(userId) ?? throw new UserInputException("id", $"there is no user '{userId}'");
        if (!await users.CheckPasswordAsync(user, currentPassword))
            throw new UserInputException("current_password", "is not the account's password", "give the password you signed in with");
        Check(await users.ChangePasswordAsync(user, currentPassword, newPassword), passwordField: "new_password");
    }

    /// <summary>Makes a token for the user; its secret is in the result and nowhere else.</summary>
    public async Task<CreatedToken> CreateTokenAsync(string userId, string name, CancellationToken cancellationToken)
    {
        if (string.IsNullOrWhiteSpace(name)) throw new UserInputException("name", "is empty", "name the token after what will use it, e.g. 'open-webui'");
        if (name.Length > MaxTokenNameLength) throw new UserInputException("name", $"is {name.Length} characters long", $"keep it to {MaxTokenNameLength}");
        if (!await People.AnyAsync(u => u.Id == userId, cancellationToken)) throw new UserInputException("user", $"there is no user '{userId}'");

        var secret = TokenPrefix + System.Buffers.Text.Base64Url.EncodeToString(RandomNumberGenerator.GetBytes(SecretBytes));
        var token = new ApiToken
        {
            Id = Guid.NewGuid(),
            UserId = userId,
            Name = name.Trim(),
            SecretHash = Hash(secret),
            Prefix = secret[..VisiblePrefixLength],
            CreatedUtc = time.GetUtcNow().UtcDateTime,
        };
        db.ApiTokens.Add(token);
        await db.SaveChangesAsync(cancellationToken);
        return new CreatedToken(TokenView.Of(token), secret);
    }

    /// <summary>The user's tokens, revoked ones too, newest first.</summary>
    public async Task<IReadOnlyList<TokenView>> ListTokensAsync(string userId, CancellationToken cancellationToken) =>
        (await db.ApiTokens.AsNoTracking().Where(t => t.UserId == userId).OrderByDescending(t => t.CreatedUtc).ToListAsync(cancellationToken))
        .Select(TokenView.Of).ToList();

    /// <summary>Revokes one of the user's tokens for good; false when the user has no such token.</summary>
    public async Task<bool> RevokeTokenAsync(string userId, Guid tokenId, CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow().UtcDateTime;
        var found = await db.ApiTokens.Where(t => t.Id == tokenId && t.UserId == userId).ExecuteUpdateAsync(
            t => t.SetProperty(x => x.RevokedUtc, x => x.RevokedUtc ?? now), cancellationToken);
        return found == 1;
    }

    /// <summary>
    /// The user a token belongs to, or null when it is unknown or revoked; records its use. It runs on every request
    /// that carries a token, so it is one indexed lookup, and a write only when the recorded use is older than
    /// <see cref="LastUsedResolution"/> (a write per request doubled a request's time).
    /// </summary>
    public async Task<ApplianceUser?> ValidateTokenAsync(string token, CancellationToken cancellationToken)
    {
        if (!token.StartsWith(TokenPrefix, StringComparison.Ordinal) || token.Length > 100) return null;
        var hash = Hash(token);
        var found = await db.ApiTokens.AsNoTracking().Where(t => t.SecretHash == hash && t.RevokedUtc == null)
            .Select(t => new { t.Id, t.LastUsedUtc, t.User }).FirstOrDefaultAsync(cancellationToken);
        if (found?.User is null) return null;
        var now = time.GetUtcNow().UtcDateTime;
        if (found.LastUsedUtc is not { } last || now - last >= LastUsedResolution)
            await db.ApiTokens.Where(t => t.Id == found.Id).ExecuteUpdateAsync(t => t.SetProperty(x => x.LastUsedUtc, now), cancellationToken);
        return found.User;
    }

    /// <summary>How stale a token's recorded last use may be.</summary>
    public static readonly TimeSpan LastUsedResolution = TimeSpan.FromMinutes(1);

    internal static string Hash(string token) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(token)));

    /// <summary>Identity's refusal (a taken name, a weak password) as a refusal of the field at fault.</summary>
    private static void Check(IdentityResult result, string passwordField = "password")
    {
        if (result.Succeeded) return;
        var error = result.Errors.First();
        var subject = error.Code switch
        {
            _ when error.Code.StartsWith("Password", StringComparison.Ordinal) => passwordField,
            _ when error.Code.Contains("UserName", StringComparison.Ordinal) => "name",
            _ => null,
        };
        var fix = subject == passwordField ? "choose a password that meets the rule"
            : subject == "name" ? "choose another name (letters, digits and -._@+)"
            : null;
        throw new UserInputException(subject, string.Join(" ", result.Errors.Select(e => e.Description)), fix);
    }
}
