using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Encodings.Web;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Identity;
using Microsoft.Extensions.Caching.Memory;
using Microsoft.Extensions.Options;
using SdAppliance.Appliance.Accounts;

namespace SdAppliance.Web.Security;

/// <summary>
/// The base of the header schemes: the principal is Identity's (the same claims and roles as the sign-in cookie's), and
/// a refusal is answered by <see cref="Challenges"/> with this scheme's reason.
/// </summary>
internal abstract class CredentialHandler(
    IOptionsMonitor<AuthenticationSchemeOptions> options, ILoggerFactory logger, UrlEncoder encoder,
    IUserClaimsPrincipalFactory<ApplianceUser> principals)
    : AuthenticationHandler<AuthenticationSchemeOptions>(options, logger, encoder)
{
    protected async Task<AuthenticateResult> SignedInAsync(ApplianceUser user) =>
        AuthenticateResult.Success(new AuthenticationTicket(await principals.CreateAsync(user), Scheme.Name));

    /// <summary>The <c>Authorization</c> header's parameter when its scheme is <paramref name="scheme"/>, else null.</summary>
    protected string? Credentials(string scheme) =>
        AuthenticationHeaderValue.TryParse(Request.Headers.Authorization, out var header)
        && string.Equals(header.Scheme, scheme, StringComparison.OrdinalIgnoreCase)
            ? header.Parameter ?? ""
            : null;

    protected override async Task HandleChallengeAsync(AuthenticationProperties properties) =>
        await Challenges.UnauthorizedAsync(Context, (await HandleAuthenticateOnceSafeAsync()).Failure?.Message);

    protected override Task HandleForbiddenAsync(AuthenticationProperties properties) => Challenges.ForbiddenAsync(Context);
}

/// <summary><c>Authorization: Bearer sda_...</c>: a personal API token.</summary>
internal sealed class BearerTokenHandler(
    IOptionsMonitor<AuthenticationSchemeOptions> options, ILoggerFactory logger, UrlEncoder encoder,
    IUserClaimsPrincipalFactory<ApplianceUser> principals, AccountService accounts)
    : CredentialHandler(options, logger, encoder, principals)
{
    public const string SchemeName = "Bearer";

    protected override async Task<AuthenticateResult> HandleAuthenticateAsync()
    {
        if (Credentials(SchemeName) is not { } token) return AuthenticateResult.NoResult();
        return await accounts.ValidateTokenAsync(token, Context.RequestAborted) is { } user
            ? await SignedInAsync(user)
            : AuthenticateResult.Fail("The token is unknown or revoked.");
    }
}

/// <summary>
/// HTTP Basic (<c>username:password</c>), what A1111 clients send with <c>--api-auth</c>; wrong passwords count towards
/// the lockout. A password check costs Identity's hash (about 0.15 s of CPU here) and A1111 clients send it with every
/// poll of <c>/progress</c>, so a verified pair is remembered for <see cref="Remembered"/>, by a hash of the header and
/// only while the user's security stamp (it changes with the password) and lockout stay as they were.
/// </summary>
internal sealed class BasicHandler(
    IOptionsMonitor<AuthenticationSchemeOptions> options, ILoggerFactory logger, UrlEncoder encoder,
    IUserClaimsPrincipalFactory<ApplianceUser> principals, SignInManager<ApplianceUser> signIn, IMemoryCache verified)
    : CredentialHandler(options, logger, encoder, principals)
{
    public const string SchemeName = "Basic";

    private static readonly TimeSpan Remembered = TimeSpan.FromMinutes(1);

    // FastAPI's HTTPBasic (A1111's --api-auth) says exactly this.
    private const string Incorrect = "Incorrect username or password";

    private sealed record Verified(string UserId, string? SecurityStamp);

    protected override async Task<AuthenticateResult> HandleAuthenticateAsync()
    {
        if (Credentials(SchemeName) is not { } encoded) return AuthenticateResult.NoResult();
        var users = signIn.UserManager;
        var key = "basic:" + Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(encoded)));
        if (verified.TryGetValue(key, out Verified? known) && await users.FindByIdAsync(known!.UserId) is { } knownUser
            && knownUser.SecurityStamp == known.SecurityStamp && !await users.IsLockedOutAsync(knownUser))
            return await SignedInAsync(knownUser);

        string decoded;
        try
        {
            decoded = Encoding.UTF8.GetString(Convert.FromBase64String(encoded));
        }
        catch (FormatException)
        {
            return AuthenticateResult.Fail("The Basic credentials are not base64 of 'username:password'.");
        }

        var colon = decoded.IndexOf(':', StringComparison.Ordinal);
        if (colon < 0) return AuthenticateResult.Fail("The Basic credentials are not base64 of 'username:password'.");
        if (await users.FindByNameAsync(decoded[..colon]) is not { } user) return AuthenticateResult.Fail(Incorrect);
        var result = await signIn.CheckPasswordSignInAsync(user, decoded[(colon + 1)..], lockoutOnFailure: true);
        if (!result.Succeeded) return AuthenticateResult.Fail(result.IsLockedOut ? AccountLockout.Message : Incorrect);
        verified.Set(key, new Verified(user.Id, user.SecurityStamp), Remembered);
        return await SignedInAsync(user);
    }
}

/// <summary>
/// A request on the A1111 routes without an <c>Authorization</c> header: the sign-in cookie if it has one, else, from
/// an address the admin allowed, the built-in LAN-client account.
/// </summary>
internal sealed class AllowedAddressHandler(
    IOptionsMonitor<AuthenticationSchemeOptions> options, ILoggerFactory logger, UrlEncoder encoder,
    IUserClaimsPrincipalFactory<ApplianceUser> principals, AllowedClientAddresses allowed, UserManager<ApplianceUser> users)
    : CredentialHandler(options, logger, encoder, principals)
{
    public const string SchemeName = "AllowedAddress";

    protected override async Task<AuthenticateResult> HandleAuthenticateAsync()
    {
        var cookie = await Context.AuthenticateAsync(IdentityConstants.ApplicationScheme);
        if (cookie.Succeeded) return cookie;
        if (!await allowed.AllowsAsync(Context.Connection.RemoteIpAddress, Context.RequestAborted)) return AuthenticateResult.NoResult();
        var account = await users.FindByIdAsync(AccountService.LanClientsId)
            ?? throw new InvalidOperationException($"the built-in account '{AccountService.LanClientsId}' is missing from the database (it comes with the migration)");
        return await SignedInAsync(account);
    }
}
