using Microsoft.Net.Http.Headers;
using SdAppliance.Appliance.Catalog;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Storage;
using SdAppliance.Web.Api;
using SdAppliance.Web.Security;

namespace SdAppliance.Web.Components.Pages.Models;

/// <summary>A new upload: the model's kind, its file name and size, and whether it is kept to the caller.</summary>
public sealed record UploadStart(string? Kind, string? FileName, long Size, bool Private = false);

/// <summary>Where an upload stands, as the page's script reads it (no server paths).</summary>
public sealed record UploadAnswer(string Id, string FileName, long SizeBytes, long ReceivedBytes, bool Complete, string? Model)
{
    public static UploadAnswer Of(UploadStatus s) => new(s.Id, s.FileName, s.SizeBytes, s.ReceivedBytes, s.IsComplete, s.Model?.Title);
}

/// <summary>
/// The Models page's plain HTTP endpoints, for what a Blazor circuit cannot carry: uploads of model files of gigabytes
/// (<c>/ui/uploads</c>: the page's script, <c>wwwroot/js/models.js</c>, slices the file and PUTs it in chunks with
/// <c>Content-Range</c>; <c>GET</c> says where to continue after a dropped connection) over <see cref="ResumableUploads"/>,
/// and the download of an export job's result (<c>/ui/jobs/{id}/download</c>) over <see cref="JobDownloads"/>. They take
/// the sign-in cookie; what changes something also needs the antiforgery token in the <c>X-CSRF-TOKEN</c> header.
/// </summary>
internal static class ModelTransferEndpoints
{
    public const string Uploads = "/ui/uploads";

    public static WebApplication MapModelTransfers(this WebApplication app)
    {
        var uploads = app.MapGroup(Uploads).RequireAuthorization().WithUserInputProblems().ExcludeFromDescription();
        uploads.MapPost("/", Start).RequireScriptAntiforgery();
        uploads.MapGet("/{id}", Status);
        uploads.MapPut("/{id}", Chunk).RequireScriptAntiforgery();
        uploads.MapDelete("/{id}", Cancel).RequireScriptAntiforgery();
        app.MapGet("/ui/jobs/{id:guid}/download", Download).RequireAuthorization().ExcludeFromDescription();
        return app;
    }

    /// <summary>The download link of a job's result, for the page.</summary>
    public static string DownloadPath(Guid job) => $"/ui/jobs/{job}/download";

    private static IResult Start(HttpContext http, ResumableUploads uploads, UploadStart body)
    {
        var kind = ApiNames.Parse<ModelKind>("kind", body.Kind ?? "checkpoint");
        var status = uploads.Start(http.User.ToCaller(), kind, body.FileName, body.Size, body.Private);
        return TypedResults.Created($"{Uploads}/{status.Id}", UploadAnswer.Of(status));
    }

    private static IResult Status(HttpContext http, ResumableUploads uploads, string id) =>
        uploads.Find(http.User.ToCaller(), id) is { } status ? TypedResults.Ok(UploadAnswer.Of(status)) : ApiProblems.NotFound($"upload '{id}'");

    private static async Task<IResult> Chunk(HttpContext http, ResumableUploads uploads, string id, CancellationToken cancellationToken)
    {
        long offset = 0;
        long? total = null;
        var header = http.Request.Headers.ContentRange.ToString();
        if (header.Length > 0)
        {
            if (!ContentRangeHeaderValue.TryParse(header, out var range) || range.From is null)
                throw new Formats.UserInputException("Content-Range", $"'{header}' is not a byte range", "send Content-Range: bytes START-END/TOTAL");
            offset = range.From.Value;
            total = range.Length;
        }
        try
        {
            var status = await uploads.WriteAsync(http.User.ToCaller(), id, offset, total, http.Request.Body, cancellationToken);
            return status is null ? ApiProblems.NotFound($"upload '{id}'") : TypedResults.Ok(UploadAnswer.Of(status));
        }
        catch (UploadOffsetException e)
        {
            // A chunk after a gap: the script continues from the server's offset.
            var status = uploads.Find(http.User.ToCaller(), id);
            return TypedResults.Conflict(status is null ? null : UploadAnswer.Of(status) with { ReceivedBytes = e.ExpectedOffset });
        }
    }

    private static IResult Cancel(HttpContext http, ResumableUploads uploads, string id) =>
        uploads.Cancel(http.User.ToCaller(), id) ? TypedResults.NoContent() : ApiProblems.NotFound($"upload '{id}'");

    private static async Task<IResult> Download(HttpContext http, JobDownloads downloads, Guid id, CancellationToken cancellationToken) =>
        await downloads.FindAsync(http.User.ToCaller(), id, cancellationToken) is { } file
            ? TypedResults.PhysicalFile(file.Path, file.ContentType, file.FileName, enableRangeProcessing: true)
            : ApiProblems.NotFound($"download of job '{id}'");
}
