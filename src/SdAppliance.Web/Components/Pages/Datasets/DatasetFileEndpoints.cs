using Microsoft.AspNetCore.Mvc;
using SdAppliance.Appliance.Storage;
using SdAppliance.Web.Api;
using SdAppliance.Web.Security;

namespace SdAppliance.Web.Components.Pages.Datasets;

/// <summary>
/// What the dataset page's own scripts and images fetch with the sign-in cookie: one file per upload request (so the browser
/// reports each file's progress, and one refused file refuses only itself; a refusal is a 200 whose <c>refused</c>
/// names the file, the problem and the fix), and cached thumbnails. Both go through the same
/// services as the REST API; the upload requires the page's antiforgery token in <c>X-CSRF-TOKEN</c>.
/// </summary>
internal static class DatasetFileEndpoints
{
    /// <summary>What one file's upload came to: the images added, or why the file was refused (naming it and the fix).</summary>
    public sealed record FileUploadOutcome(IReadOnlyList<DatasetImage> Added, string? Refused);

    public const string Prefix = "/ui/datasets";

    public static string UploadUrl(string dataset, string? folder) =>
        $"{Prefix}/{Uri.EscapeDataString(dataset)}/files" + (string.IsNullOrEmpty(folder) ? "" : "?folder=" + Uri.EscapeDataString(folder));

    public static string ThumbnailUrl(string dataset, string image, int size = 256) =>
        $"{Prefix}/{Uri.EscapeDataString(dataset)}/thumbnails/{string.Join('/', image.Split('/').Select(Uri.EscapeDataString))}?size={size}";

    public static string ImageUrl(string dataset, string image) =>
        $"{RestApi.Prefix}/datasets/{Uri.EscapeDataString(dataset)}/images/{string.Join('/', image.Split('/').Select(Uri.EscapeDataString))}";

    public static WebApplication MapDatasetFiles(this WebApplication app)
    {
        var group = app.MapGroup(Prefix).RequireAuthorization().WithUserInputProblems().ExcludeFromDescription();
        group.MapPost("/{name}/files", Upload).RequireScriptAntiforgery();
        group.MapGet("/{name}/thumbnails/{**image}", Thumbnail);
        return app;
    }

    private static async Task<IResult> Upload(HttpContext http, DatasetService datasets, string name, [FromQuery] string? folder,
        CancellationToken cancellationToken)
    {
        if (!http.Request.HasFormContentType)
            throw new Formats.UserInputException("files", "an upload is a multipart/form-data request", "send one file as a form file");
        var form = await http.Request.ReadFormAsync(cancellationToken);
        try
        {
            var added = await datasets.AddImagesAsync(http.User.ToCaller(), name, string.IsNullOrEmpty(folder) ? null : folder, Uploads(form.Files), cancellationToken);
            return TypedResults.Ok(new FileUploadOutcome(added, null));
        }
        catch (Formats.UserInputException e) when (e is not (DatasetNotFoundException or Appliance.NotPermittedException))
        {
            // A refused file is an answer about that file, not a failed request: the page lists it with the reason.
            return TypedResults.Ok(new FileUploadOutcome([], e.Message));
        }
    }

    private static async IAsyncEnumerable<DatasetUpload> Uploads(IFormFileCollection files)
    {
        foreach (var file in files)
        {
            await using var content = file.OpenReadStream();
            yield return new DatasetUpload(file.FileName, content);
        }
    }

    private static async Task<IResult> Thumbnail(HttpContext http, ThumbnailCache thumbnails, string name, string image, [FromQuery] int? size, CancellationToken cancellationToken)
    {
        if (await thumbnails.GetAsync(http.User.ToCaller(), name, image, size ?? 256, cancellationToken) is not { } file)
            return ApiProblems.NotFound($"image '{image}' in dataset '{name}'");
        http.Response.Headers.CacheControl = "private, max-age=60";
        return TypedResults.PhysicalFile(file.FullPath, file.ContentType);
    }
}
