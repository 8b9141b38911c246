using System.Threading.RateLimiting;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.DataProtection;
using Microsoft.AspNetCore.Identity;
using Microsoft.Extensions.Options;
using SdAppliance.Appliance.Accounts;
using SdAppliance.Appliance.Storage;

namespace SdAppliance.Web.Security;

/// <summary>
/// Authentication (the sign-in cookie, <c>Bearer</c> tokens, HTTP Basic, allowed addresses on the A1111 routes),
/// authorization (everything needs a signed-in user unless it says otherwise), setup and login.
/// </summary>
public static class SecurityEndpoints
{
    /// <summary>The policy of admin-only endpoints: <c>.RequireAuthorization(SecurityEndpoints.AdminPolicy)</c>.</summary>
    public const string AdminPolicy = "admin";

    /// <summary>The rate limit of the sign-in and setup form posts, per client address.</summary>
    public const string LoginRateLimit = "login";

    private const string ByHeader = "appliance";

    public static WebApplicationBuilder AddApplianceSecurity(this WebApplicationBuilder builder)
    {
        var services = builder.Services;
        services.Configure<SecurityOptions>(builder.Configuration.GetSection(SecurityOptions.Section));
        services.AddProblemDetails();
        services.AddMemoryCache();
        services.AddDataProtection().SetApplicationName("SdAppliance")
            .PersistKeysToFileSystem(new DirectoryInfo(new DataFolder(ApplianceHost.Options(builder.Configuration).DataFolder).Keys));
        new IdentityBuilder(typeof(ApplianceUser), typeof(IdentityRole), services).AddSignInManager();

        services.AddAuthentication(ByHeader)
            .AddPolicyScheme(ByHeader, "Cookie, Bearer token, Basic or allowed address, by the request", policy =>
                policy.ForwardDefaultSelector = context => SchemeFor(context.Request))
            .AddScheme<AuthenticationSchemeOptions, BearerTokenHandler>(BearerTokenHandler.SchemeName, null)
            .AddScheme<AuthenticationSchemeOptions, BasicHandler>(BasicHandler.SchemeName, null)
            .AddScheme<AuthenticationSchemeOptions, AllowedAddressHandler>(AllowedAddressHandler.SchemeName, null)
            .AddIdentityCookies();
        services.ConfigureApplicationCookie(cookie =>
        {
            cookie.Cookie.Name = "sdapp.auth";
            cookie.LoginPath = Challenges.LoginPath;
            cookie.LogoutPath = "/logout";
            Challenges.Configure(cookie.Events);
        });
        // A deleted user or a changed password ends the cookie's sessions within a minute, not Identity's default 30.
        services.Configure<SecurityStampValidatorOptions>(o => o.ValidationInterval = TimeSpan.FromMinutes(1));

        services.AddAuthorizationBuilder()
            .SetFallbackPolicy(new AuthorizationPolicyBuilder().RequireAuthenticatedUser().Build())
            .AddPolicy(AdminPolicy, policy => policy.RequireAuthenticatedUser().RequireRole(Roles.Admin));

        // The header: the UI's own scripts (uploads) send the token there on cookie-authenticated requests.
        services.AddAntiforgery(o =>
        {
            o.Cookie.Name = "sdapp.antiforgery";
            o.HeaderName = "X-CSRF-TOKEN";
        });
        services.AddRateLimiter(limiter =>
        {
            limiter.RejectionStatusCode = StatusCodes.Status429TooManyRequests;
            // The setup and login pages take it for both their GET and their POST: only the posts (attempts) count.
            limiter.AddPolicy(LoginRateLimit, context => !HttpMethods.IsPost(context.Request.Method)
                ? RateLimitPartition.GetNoLimiter("pages")
                // Partitions are found by key: a post's must never be the pages' one.
                : RateLimitPartition.GetFixedWindowLimiter(
                    "posts from " + context.Connection.RemoteIpAddress,
                    _ => new FixedWindowRateLimiterOptions
                    {
                        PermitLimit = context.RequestServices.GetRequiredService<IOptions<SecurityOptions>>().Value.LoginAttemptsPerMinute,
                        Window = TimeSpan.FromMinutes(1),
                    }));
            limiter.OnRejected = (rejected, cancellationToken) => new ValueTask(Results.Problem(
                statusCode: StatusCodes.Status429TooManyRequests, title: "Too many sign-in attempts",
                detail: "Too many sign-in attempts from this address: wait a minute and try again.").ExecuteAsync(rejected.HttpContext));
        });
        return builder;
    }

    public static WebApplication UseApplianceSecurity(this WebApplication app)
    {
        app.UseAuthentication();
        app.UseAuthorization();
        app.UseRateLimiter();
        app.UseAntiforgery();
        app.MapAccountApi();
        return app;
    }

    /// <summary>
    /// Requires a signed-in user even on endpoints a library maps as anonymous (Scalar's script assets): its
    /// <see cref="IAllowAnonymous"/> is removed after every other convention ran.
    /// </summary>
    public static TBuilder RequireSignedInEvenIfAnonymous<TBuilder>(this TBuilder builder) where TBuilder : IEndpointConventionBuilder
    {
        builder.RequireAuthorization();
        builder.Finally(endpoint =>
        {
            for (var i = endpoint.Metadata.Count - 1; i >= 0; i--)
                if (endpoint.Metadata[i] is IAllowAnonymous) endpoint.Metadata.RemoveAt(i);
        });
        return builder;
    }

    /// <summary>
    /// The scheme that authenticates a request: the one its <c>Authorization</c> header names; without one, on the
    /// A1111 routes the allowed-address check (after the cookie), elsewhere the sign-in cookie.
    /// </summary>
    private static string SchemeFor(HttpRequest request)
    {
        var authorization = request.Headers.Authorization.ToString();
        if (authorization.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase)) return BearerTokenHandler.SchemeName;
        if (authorization.StartsWith("Basic ", StringComparison.OrdinalIgnoreCase)) return BasicHandler.SchemeName;
        return request.Path.StartsWithSegments("/sdapi/v1") ? AllowedAddressHandler.SchemeName : IdentityConstants.ApplicationScheme;
    }
}
