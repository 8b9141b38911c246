using SdAppliance.Appliance.Storage;
using SdAppliance.Web.Security;

namespace SdAppliance.Web.Api;

/// <summary><c>/api/v1/outputs</c>: the generated images the caller may see (an admin: all), and their download.</summary>
internal static class OutputEndpoints
{
    private const int DefaultLimit = 100;

    public static void MapOutputs(this RouteGroupBuilder api)
    {
        var outputs = api.MapGroup("/outputs").WithTags("Outputs");
        outputs.MapGet("/", List).WithSummary("The caller's generated images, newest first; day (yyyy-MM-dd) and limit narrow it");
        outputs.MapGet("/{**path}", Download).WithSummary("Downloads one image (its path as the list gives it: yyyy-MM-dd/NAME.png), with its PNG info");
    }

    private static async Task<IResult> List(HttpContext http, OutputService outputs, CancellationToken cancellationToken, string? day = null, int limit = DefaultLimit) =>
        TypedResults.Ok(await outputs.ListAsync(http.User.ToCaller(), day, limit, cancellationToken));

    private static async Task<IResult> Download(HttpContext http, OutputService outputs, string path, CancellationToken cancellationToken) =>
        await outputs.OpenAsync(http.User.ToCaller(), path, cancellationToken) is { } file
            ? Files.Send(file)
            : ApiProblems.NotFound($"output '{path}'");
}

/// <summary>How a stored file goes out: from its path, with its media type and name, ranges allowed.</summary>
internal static class Files
{
    public static IResult Send(FileDownload file) =>
        TypedResults.PhysicalFile(file.FullPath, file.ContentType, file.FileName, enableRangeProcessing: true);
}
