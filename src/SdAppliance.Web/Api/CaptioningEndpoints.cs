using Microsoft.AspNetCore.Http.HttpResults;
using SdAppliance.Appliance.Catalog;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Storage;
using SdAppliance.Onnx.Tagging;
using SdAppliance.Web.Security;

namespace SdAppliance.Web.Api;

/// <summary>What auto-captions a dataset; omitted fields take kohya's defaults.</summary>
/// <param name="Tagger">A tagger's name, as <c>/api/v1/taggers</c> lists them.</param>
/// <param name="UndesiredTags">Comma-separated tags never to write.</param>
/// <param name="Mode">skip (images with a caption are left alone), append or overwrite.</param>
/// <param name="RatingTag">Write the likeliest rating tag first.</param>
public sealed record AutoCaptionBody(string Tagger, double? Threshold = null, double? CharacterThreshold = null, string? UndesiredTags = null,
    CaptionMode? Mode = null, bool KeepUnderscores = false, bool RatingTag = false);

/// <summary><c>/api/v1/taggers</c> and <c>/api/v1/datasets/{name}/auto-caption</c>: the image taggers, and a captioning job over a dataset.</summary>
internal static class CaptioningEndpoints
{
    public static void MapCaptioning(this RouteGroupBuilder api)
    {
        api.MapGet("/taggers", (TaggerCatalog taggers) => TypedResults.Ok(taggers.List()))
            .WithTags("Datasets").WithSummary("The image taggers in models/taggers/ (WD14: model.onnx + selected_tags.csv)");
        api.MapPost("/datasets/{name}/auto-caption", AutoCaption).WithTags("Datasets")
            .WithSummary("Queues a captioning job: the tagger writes a .txt caption beside each image (mode: skip, append or overwrite existing ones)");
    }

    private static async Task<Created<JobView>> AutoCaption(HttpContext http, AutoCaptions captions, string name, AutoCaptionBody body, CancellationToken cancellationToken)
    {
        var request = new AutoCaptionRequest(name, body.Tagger,
            body.Threshold ?? CaptionOptions.DefaultThreshold, body.CharacterThreshold ?? CaptionOptions.DefaultCharacterThreshold,
            body.UndesiredTags, body.Mode ?? CaptionMode.Skip, body.KeepUnderscores, body.RatingTag);
        var job = await captions.StartAsync(http.User.ToCaller(), request, cancellationToken);
        return TypedResults.Created($"/api/v1/jobs/{job.Id}", job);
    }
}
