using Microsoft.AspNetCore.Http.HttpResults;
using SdAppliance.Appliance;
using SdAppliance.Appliance.Storage;
using SdAppliance.Formats;

namespace SdAppliance.Web.Api;

/// <summary>
/// The REST API's errors, all ProblemDetails: a refusal of the request (<see cref="UserInputException"/>, from any
/// layer) names its field or file in <c>field</c> with the fix in <c>fix</c>; a resource the caller cannot see is a 404
/// whether or not it exists, so existence does not leak.
/// </summary>
internal static class ApiProblems
{
    /// <summary>
    /// A refusal: 404 for a thing the caller cannot see (<see cref="DatasetNotFoundException"/>), 403 for one they see but
    /// may not change (<see cref="NotPermittedException"/>), else 400.
    /// </summary>
    public static ProblemHttpResult Refusal(UserInputException e)
    {
        var extensions = new Dictionary<string, object?>();
        if (e.Subject is not null) extensions["field"] = e.Subject;
        if (e.Fix is not null) extensions["fix"] = e.Fix;
        return TypedResults.Problem(
            statusCode: e switch
            {
                DatasetNotFoundException => StatusCodes.Status404NotFound,
                NotPermittedException => StatusCodes.Status403Forbidden,
                _ => StatusCodes.Status400BadRequest,
            },
            title: e.Subject is null ? "The request cannot be used" : $"{e.Subject}: {e.Problem}",
            detail: e.Message,
            extensions: extensions);
    }

    public static ProblemHttpResult NotFound(string what) =>
        TypedResults.Problem(statusCode: StatusCodes.Status404NotFound, title: "Not found", detail: $"there is no {what} you can see");

    /// <summary>Turns a <see cref="UserInputException"/> thrown by an endpoint of the group into its 400 (one place for all of /api/v1).</summary>
    public static RouteGroupBuilder WithUserInputProblems(this RouteGroupBuilder group) =>
        group.AddEndpointFilter(async (context, next) =>
        {
            try
            {
                return await next(context);
            }
            catch (UserInputException e)
            {
                return Refusal(e);
            }
        });
}
