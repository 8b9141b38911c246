using Microsoft.AspNetCore.Antiforgery;

namespace SdAppliance.Web.Security;

/// <summary>
/// The antiforgery check of the endpoints the UI's own scripts call with the sign-in cookie (uploads): the page's token
/// in the <c>X-CSRF-TOKEN</c> header. The middleware alone only records a failed check on endpoints that bind no form.
/// </summary>
public static class ScriptAntiforgery
{
    public static TBuilder RequireScriptAntiforgery<TBuilder>(this TBuilder builder) where TBuilder : IEndpointConventionBuilder
    {
        builder.WithMetadata(new RequireAntiforgeryTokenAttribute());
        builder.AddEndpointFilter(async (context, next) =>
        {
            var http = context.HttpContext;
            var valid = http.Features.Get<IAntiforgeryValidationFeature>() is { } checkedByMiddleware
                ? checkedByMiddleware.IsValid
                : await http.RequestServices.GetRequiredService<IAntiforgery>().IsRequestValidAsync(http);
            return valid
                ? await next(context)
                : TypedResults.Problem(statusCode: StatusCodes.Status400BadRequest, title: "X-CSRF-TOKEN: missing or wrong",
                    detail: "The request lacks the page's antiforgery token (the X-CSRF-TOKEN header): reload the page and try again.");
        });
        return builder;
    }
}
