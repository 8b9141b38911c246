using System.Security.Claims;
using SdAppliance.Appliance.Accounts;
using SdAppliance.Web.Api;

namespace SdAppliance.Web.Security;

/// <summary>
/// The accounts' REST endpoints: <c>/api/v1/tokens</c> (the caller's own tokens), and for admins <c>/api/v1/users</c>
/// and <c>/api/v1/security/allowed-addresses</c>. Thin over <see cref="AccountService"/>; refusals are
/// <see cref="ApiProblems"/>, as everywhere under <c>/api/v1</c>.
/// </summary>
internal static class AccountApi
{
    public sealed record TokenRequest(string? Name);

    public sealed record TokenCreated(Guid Id, string Name, string Prefix, DateTime CreatedUtc, string Token);

    public sealed record UserRequest(string? Name, string? Password, bool Admin = false);

    public sealed record PasswordChange(string? CurrentPassword, string? NewPassword);

    public sealed record AllowedAddresses(IReadOnlyList<string>? Addresses);

    public static void MapAccountApi(this IEndpointRouteBuilder app)
    {
        var api = app.MapGroup("/api/v1").WithUserInputProblems().WithTags("Accounts");

        var tokens = api.MapGroup("/tokens");
        tokens.MapGet("/", (ClaimsPrincipal user, AccountService accounts, CancellationToken cancellationToken) =>
            accounts.ListTokensAsync(user.ToCaller().UserId, cancellationToken));
        tokens.MapPost("/", async (TokenRequest request, ClaimsPrincipal user, AccountService accounts, CancellationToken cancellationToken) =>
        {
            var (token, secret) = await accounts.CreateTokenAsync(user.ToCaller().UserId, request.Name ?? "", cancellationToken);
            return TypedResults.Created($"/api/v1/tokens/{token.Id}", new TokenCreated(token.Id, token.Name, token.Prefix, token.CreatedUtc, secret));
        });
        tokens.MapDelete("/{id:guid}", async (Guid id, ClaimsPrincipal user, AccountService accounts, CancellationToken cancellationToken) =>
            await accounts.RevokeTokenAsync(user.ToCaller().UserId, id, cancellationToken)
                ? Results.NoContent()
                : ApiProblems.NotFound($"token {id}"));

        api.MapPut("/account/password", async (PasswordChange change, ClaimsPrincipal user, AccountService accounts, CancellationToken cancellationToken) =>
        {
            await accounts.ChangePasswordAsync(user.ToCaller().UserId, change.CurrentPassword ?? "", change.NewPassword ?? "", cancellationToken);
            return Results.NoContent();
        });

        var users = api.MapGroup("/users").RequireAuthorization(SecurityEndpoints.AdminPolicy);
        users.MapGet("/", (AccountService accounts, CancellationToken cancellationToken) => accounts.ListUsersAsync(cancellationToken));
        users.MapPost("/", async (UserRequest request, AccountService accounts, CancellationToken cancellationToken) =>
        {
            var created = await accounts.CreateUserAsync(request.Name ?? "", request.Password ?? "", request.Admin, cancellationToken);
            return TypedResults.Created($"/api/v1/users/{created.Id}", created);
        });
        users.MapDelete("/{id}", async (string id, ClaimsPrincipal user, AccountService accounts, CancellationToken cancellationToken) =>
            await accounts.DeleteUserAsync(user.ToCaller().UserId, id, cancellationToken)
                ? Results.NoContent()
                : ApiProblems.NotFound($"user {id}"));

        var addresses = api.MapGroup("/security/allowed-addresses").RequireAuthorization(SecurityEndpoints.AdminPolicy);
        addresses.MapGet("/", async (AllowedClientAddresses allowed, CancellationToken cancellationToken) =>
            new AllowedAddresses(await allowed.GetAsync(cancellationToken)));
        addresses.MapPut("/", async (AllowedAddresses request, AllowedClientAddresses allowed, CancellationToken cancellationToken) =>
            new AllowedAddresses(await allowed.SetAsync(request.Addresses ?? [], cancellationToken)));
    }
}
