using Microsoft.AspNetCore.Mvc;
using SdAppliance.Appliance.Storage;
using SdAppliance.Web.Api;
using SdAppliance.Web.Security;

namespace SdAppliance.Web.Components.Pages.Generate;

/// <summary>
/// The gallery's thumbnails, fetched by its images with the sign-in cookie: an output the caller may see
/// (<see cref="OutputService.OpenAsync"/>), made small once by <see cref="ThumbnailCache"/>. The full picture is the
/// REST API's download.
/// </summary>
internal static class OutputThumbnailEndpoints
{
    public const string Prefix = "/ui/outputs";

    /// <summary>The thumbnail of an output (its path as <see cref="OutputService.ListAsync"/> gives it).</summary>
    public static string ThumbnailUrl(string output, int size = 256) => $"{Prefix}/thumbnails/{Escape(output)}?size={size}";

    /// <summary>The picture itself, through the REST API (it is also the download).</summary>
    public static string ImageUrl(string output) => $"{RestApi.Prefix}/outputs/{Escape(output)}";

    public static WebApplication MapOutputThumbnails(this WebApplication app)
    {
        app.MapGroup(Prefix).RequireAuthorization().WithUserInputProblems().ExcludeFromDescription()
            .MapGet("/thumbnails/{**path}", Thumbnail);
        return app;
    }

    private static string Escape(string path) => string.Join('/', path.Split('/').Select(Uri.EscapeDataString));

    private static async Task<IResult> Thumbnail(HttpContext http, OutputService outputs, ThumbnailCache thumbnails, string path, [FromQuery] int? size,
        CancellationToken cancellationToken)
    {
        if (await outputs.OpenAsync(http.User.ToCaller(), path, cancellationToken) is not { } original)
            return ApiProblems.NotFound($"output '{path}'");
        var file = await thumbnails.OfAsync(original, size ?? 256, cancellationToken);
        http.Response.Headers.CacheControl = "private, max-age=60";
        return TypedResults.PhysicalFile(file.FullPath, file.ContentType);
    }
}
