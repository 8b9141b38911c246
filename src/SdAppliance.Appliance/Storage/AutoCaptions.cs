using System.Text.Json;
using System.Text.Json.Nodes;
using SdAppliance.Appliance.Catalog;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Onnx.Tagging;

namespace SdAppliance.Appliance.Storage;

/// <summary>What auto-captioning a dataset asks for: the tagger (by name, <see cref="TaggerCatalog"/>) and how its scores become captions.</summary>
/// <param name="UndesiredTags">Comma-separated tags never to write.</param>
/// <param name="RatingTag">Write the likeliest rating tag first.</param>
public sealed record AutoCaptionRequest(
    string Dataset, string Tagger,
    double Threshold = CaptionOptions.DefaultThreshold, double CharacterThreshold = CaptionOptions.DefaultCharacterThreshold,
    string? UndesiredTags = null, CaptionMode Mode = CaptionMode.Skip, bool KeepUnderscores = false, bool RatingTag = false);

/// <summary>
/// Auto-captioning a dataset with an image tagger, as a <see cref="JobKind.Captioning"/> job so its progress shows: the
/// caller must be allowed to change the dataset, and the request is checked (fields named) before it is queued.
/// </summary>
public sealed class AutoCaptions(DatasetService datasets, Ownership ownership, JobService jobs)
{
    public async Task<JobView> StartAsync(Caller caller, AutoCaptionRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (await datasets.GetAsync(caller, request.Dataset, cancellationToken) is not { } dataset)
            throw new DatasetNotFoundException(request.Dataset);
        Ownership.RequireChange(caller, await ownership.FindAsync(StorageArea.Datasets, dataset.Name, cancellationToken), dataset.Name);
        var body = new JsonObject
        {
            ["dataset"] = dataset.Name,
            ["tagger"] = request.Tagger,
            ["threshold"] = request.Threshold,
            ["character_threshold"] = request.CharacterThreshold,
            ["undesired_tags"] = request.UndesiredTags,
            ["mode"] = CaptioningJobRunner.Modes.FirstOrDefault(m => m.Value == request.Mode).Key ?? request.Mode.ToString(),
            ["keep_underscores"] = request.KeepUnderscores,
            ["rating_tag"] = request.RatingTag,
        };
        return await jobs.SubmitAsync(new JobSubmission(JobKind.Captioning, caller.UserId, JsonSerializer.SerializeToElement(body)), cancellationToken);
    }
}
