using System.Text.Json;
using Microsoft.AspNetCore.Authentication.Cookies;
using SdAppliance.Appliance.Accounts;

namespace SdAppliance.Web.Security;

/// <summary>
/// How a request without a way in is answered, by where it went: the A1111 routes as A1111 does (401,
/// <c>WWW-Authenticate: Basic</c>, <c>{"detail": ...}</c>), the REST API with a ProblemDetails, a page with a redirect to
/// the login (or, on a fresh install, to the setup).
/// </summary>
internal static class Challenges
{
    public const string Realm = "Basic realm=\"SdAppliance\", charset=\"UTF-8\"";
    public const string NotSignedIn = "Not authenticated";
    public const string SetupPath = "/setup";
    public const string LoginPath = "/login";
    public const string NotAllowedPath = "/not-allowed";

    public static bool IsA1111(HttpRequest request) => request.Path.StartsWithSegments("/sdapi");

    public static bool IsApi(HttpRequest request) => IsA1111(request) || request.Path.StartsWithSegments("/api");

    /// <summary>401 (503 before setup) for an API request; <paramref name="reason"/> says what was wrong with the credentials given.</summary>
    public static async Task UnauthorizedAsync(HttpContext context, string? reason)
    {
        var response = context.Response;
        if (await SetupNeededAsync(context))
        {
            await WriteAsync(context, StatusCodes.Status503ServiceUnavailable, "The appliance is not set up yet",
                $"Finish setup at {SetupPath}: it creates the admin account.");
            return;
        }

        response.Headers.Append("WWW-Authenticate", Realm);
        if (!IsA1111(context.Request)) response.Headers.Append("WWW-Authenticate", "Bearer");
        await WriteAsync(context, StatusCodes.Status401Unauthorized, "Not signed in",
            reason ?? (IsA1111(context.Request) ? NotSignedIn : "Send 'Authorization: Bearer <token>' (make one under /api/v1/tokens or with 'sdapp token create') or HTTP Basic credentials."));
    }

    public static Task ForbiddenAsync(HttpContext context) =>
        WriteAsync(context, StatusCodes.Status403Forbidden, "Not allowed", "This needs an admin account.");

    /// <summary>The cookie scheme's events: pages redirect, API requests get the API's answers.</summary>
    public static void Configure(CookieAuthenticationEvents events)
    {
        events.OnRedirectToLogin = async redirect =>
        {
            if (IsApi(redirect.Request)) await UnauthorizedAsync(redirect.HttpContext, null);
            else redirect.Response.Redirect(await SetupNeededAsync(redirect.HttpContext) ? SetupPath : LoginRedirect(redirect.Request));
        };
        // A page a signed-in user may not open (an admin page loaded directly): the UI's own not-allowed page.
        events.OnRedirectToAccessDenied = redirect =>
        {
            if (IsApi(redirect.Request)) return ForbiddenAsync(redirect.HttpContext);
            redirect.Response.Redirect(NotAllowedPath);
            return Task.CompletedTask;
        };
    }

    /// <summary>The login page, back to this page afterwards; relative, so it works behind any host name the LAN uses.</summary>
    private static string LoginRedirect(HttpRequest request) =>
        $"{LoginPath}?returnUrl={Uri.EscapeDataString(request.PathBase + request.Path + request.QueryString)}";

    public static Task<bool> SetupNeededAsync(HttpContext context) =>
        context.RequestServices.GetRequiredService<AccountService>().IsSetupNeededAsync(context.RequestAborted);

    private static async Task WriteAsync(HttpContext context, int status, string title, string detail)
    {
        var response = context.Response;
        response.StatusCode = status;
        if (IsA1111(context.Request))
        {
            response.ContentType = "application/json";
            await response.WriteAsync(JsonSerializer.Serialize(new { detail }), context.RequestAborted);
        }
        else
        {
            await Results.Problem(statusCode: status, title: title, detail: detail).ExecuteAsync(context);
        }
    }

}
