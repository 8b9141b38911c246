using System.Text.Encodings.Web;
using Microsoft.AspNetCore.Antiforgery;
using Microsoft.AspNetCore.Identity;
using Microsoft.AspNetCore.Mvc;
using SdAppliance.Appliance.Accounts;
using SdAppliance.Formats;

namespace SdAppliance.Web.Security;

/// <summary>
/// The plain server-rendered pages <c>/setup</c> (the first admin), <c>/login</c> and <c>/logout</c>, until the UI
/// replaces them. Their forms carry antiforgery tokens, which the form binding checks.
/// </summary>
internal static class AccountPages
{
    // Settable properties, not positional records: form binding leaves a missing field null instead of refusing the post.
    public sealed class SetupForm
    {
        public string? Name { get; set; }
        public string? Password { get; set; }
        public string? Confirm { get; set; }
    }

    public sealed class LoginForm
    {
        public string? Name { get; set; }
        public string? Password { get; set; }
        public string? ReturnUrl { get; set; }
    }

    public static void MapAccountPages(this IEndpointRouteBuilder app)
    {
        app.MapGet(Challenges.SetupPath, async (HttpContext context, AccountService accounts, CancellationToken cancellationToken) =>
                await accounts.IsSetupNeededAsync(cancellationToken) ? SetupPage(context, null, null, 200) : Results.Redirect(Challenges.LoginPath))
            .AllowAnonymous();

        app.MapPost(Challenges.SetupPath, async ([FromForm] SetupForm form, HttpContext context, AccountService accounts,
                SignInManager<ApplianceUser> signIn, CancellationToken cancellationToken) =>
            {
                if (!await accounts.IsSetupNeededAsync(cancellationToken)) return Results.Redirect(Challenges.LoginPath);
                if (form.Password != form.Confirm)
                    return SetupPage(context, form.Name, "The two passwords differ: type the same password twice.", 400);
                try
                {
                    var admin = await accounts.CreateFirstAdminAsync(form.Name ?? "", form.Password ?? "", cancellationToken);
                    await signIn.SignInAsync((await signIn.UserManager.FindByIdAsync(admin.Id))!, isPersistent: false);
                    return Results.Redirect("/");
                }
                catch (UserInputException e)
                {
                    return SetupPage(context, form.Name, e.Message, 400);
                }
            })
            .AllowAnonymous()
            .RequireRateLimiting(SecurityEndpoints.LoginRateLimit);

        app.MapGet(Challenges.LoginPath, async (HttpContext context, AccountService accounts, string? returnUrl, CancellationToken cancellationToken) =>
                await accounts.IsSetupNeededAsync(cancellationToken) ? Results.Redirect(Challenges.SetupPath) : LoginPage(context, null, returnUrl, null, 200))
            .AllowAnonymous();

        app.MapPost(Challenges.LoginPath, async ([FromForm] LoginForm form, HttpContext context, SignInManager<ApplianceUser> signIn) =>
            {
                var result = await signIn.PasswordSignInAsync(form.Name ?? "", form.Password ?? "", isPersistent: false, lockoutOnFailure: true);
                if (result.Succeeded) return Results.Redirect(IsLocal(form.ReturnUrl) ? form.ReturnUrl! : "/");
                var problem = result.IsLockedOut ? AccountLockout.Message : "Wrong name or password.";
                return LoginPage(context, form.Name, form.ReturnUrl, problem, 401);
            })
            .AllowAnonymous()
            .RequireRateLimiting(SecurityEndpoints.LoginRateLimit);

        app.MapGet("/logout", (HttpContext context) =>
            Page(context, "Sign out", 200, null, "/logout", "<p>Sign out of SdAppliance?</p>", "Sign out"));

        // The form has no fields; binding it is what makes the endpoint check the antiforgery token.
        app.MapPost("/logout", async (IFormCollection form, SignInManager<ApplianceUser> signIn) =>
        {
            await signIn.SignOutAsync();
            return Results.Redirect(Challenges.LoginPath);
        });
    }

    private static IResult SetupPage(HttpContext context, string? name, string? problem, int status) =>
        Page(context, "Set up SdAppliance", status, problem, Challenges.SetupPath,
            "<p>Nobody has an account yet. Create the admin account: it manages users and sees every job.</p>" +
            Field("Name", "name", "text", name, "username") +
            Field("Password", "password", "password", null, "new-password") +
            Field("Password again", "confirm", "password", null, "new-password"),
            "Create the admin");

    private static IResult LoginPage(HttpContext context, string? name, string? returnUrl, string? problem, int status) =>
        Page(context, "Sign in to SdAppliance", status, problem, Challenges.LoginPath,
            Field("Name", "name", "text", name, "username") +
            Field("Password", "password", "password", null, "current-password") +
            (IsLocal(returnUrl) ? Hidden("returnUrl", returnUrl!) : ""),
            "Sign in");

    private static IResult Page(HttpContext context, string title, int status, string? problem, string action, string fields, string submit)
    {
        var tokens = context.RequestServices.GetRequiredService<IAntiforgery>().GetAndStoreTokens(context);
        var problemHtml = problem is null ? "" : $"<p class=\"problem\" role=\"alert\">{Encode(problem)}</p>";
        var html = $"""
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <link rel="icon" type="image/svg+xml" href="/favicon.svg"><title>{Encode(title)}</title>
            <style>{Style}</style>
            </head><body>
            <h1>{Encode(title)}</h1>
            {problemHtml}
            <form method="post" action="{Encode(action)}">
            {Hidden(tokens.FormFieldName, tokens.RequestToken!)}
            {fields}
            <button type="submit">{Encode(submit)}</button>
            </form>
            </body></html>
            """;
        return Results.Content(html, "text/html; charset=utf-8", statusCode: status);
    }

    private const string Style =
        "body{font-family:system-ui,sans-serif;max-width:26rem;margin:4rem auto;padding:0 1rem}label{display:block;margin:.8rem 0}" +
        "input{display:block;width:100%;padding:.4rem}.problem{color:#b00020}";

    private static string Field(string label, string name, string type, string? value, string autocomplete) =>
        $"<label>{Encode(label)}<input name=\"{name}\" type=\"{type}\" autocomplete=\"{autocomplete}\" required{(value is null ? "" : $" value=\"{Encode(value)}\"")}></label>";

    private static string Hidden(string name, string value) => $"<input type=\"hidden\" name=\"{Encode(name)}\" value=\"{Encode(value)}\">";

    private static string Encode(string text) => HtmlEncoder.Default.Encode(text);

    /// <summary>Only a path on this host: a return address must not send the user to another site after signing in.</summary>
    internal static bool IsLocal(string? url) =>
        url is { Length: > 0 } && url[0] == '/' && (url.Length == 1 || (url[1] != '/' && url[1] != '\\')) && !url.Contains('\n') && !url.Contains('\r');
}
