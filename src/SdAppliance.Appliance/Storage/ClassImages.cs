using System.Text.Json;
using System.Text.Json.Nodes;
using SdAppliance.Appliance.Catalog;
using SdAppliance.Appliance.Generation;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Formats;

namespace SdAppliance.Appliance.Storage;

/// <summary>What generating class images asks for: the dataset's class folder, the class prompt, how many images it should hold.</summary>
/// <param name="Model">The base model (a path in the data folder, as a training request names it); null: the demo model.</param>
/// <param name="Resolution">The pictures' size; null: the base model's native size (the demo model's 64, SD 1.x's 512).</param>
public sealed record ClassImagesRequest(string Dataset, string ClassFolder, string ClassPrompt, int Wanted, string? Model = null, int? Resolution = null);

/// <summary>
/// Class images for prior preservation (DreamBooth), kept in a plain sub-folder of the dataset: how many are there, and a
/// <see cref="JobKind.ClassImages"/> job that generates the missing ones with the base model, as the trainer would before a run.
/// </summary>
public sealed class ClassImages(DatasetService datasets, JobService jobs, ModelCatalog catalog, DataFolder data)
{
    /// <summary>Queues the job that fills the class folder up to <see cref="ClassImagesRequest.Wanted"/>; the request is checked (fields named) before it is queued.</summary>
    public async Task<JobView> GenerateAsync(Caller caller, ClassImagesRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (string.IsNullOrWhiteSpace(request.ClassPrompt))
            throw new UserInputException("class_prompt", "is empty", "describe the class, such as \"a photo of a cat\"");
        if (request.Wanted < 1)
            throw new UserInputException("num_class_images", $"{request.Wanted} must be at least 1", "give how many class images the folder should hold, such as 100 to 200");
        var (data, classData) = await datasets.ClassImagePathsAsync(caller, request.Dataset, request.ClassFolder, cancellationToken);
        var body = new JsonObject
        {
            ["method"] = "dreambooth",
            ["data"] = data,
            ["class_data"] = classData,
            ["class_prompt"] = request.ClassPrompt.Trim(),
            ["num_class_images"] = request.Wanted,
            ["resolution"] = request.Resolution ?? await NativeResolutionAsync(caller, request.Model, cancellationToken),
        };
        if (!string.IsNullOrWhiteSpace(request.Model)) body["model"] = request.Model;
        return await jobs.SubmitAsync(new JobSubmission(JobKind.ClassImages, caller.UserId, JsonSerializer.SerializeToElement(body)), cancellationToken);
    }

    /// <summary>The native size of the base model a request names; SD 1.x's where the catalog does not list it (the job then says why).</summary>
    private async Task<int> NativeResolutionAsync(Caller caller, string? model, CancellationToken cancellationToken)
    {
        var models = await catalog.ListAsync(caller, ModelKind.Checkpoint, cancellationToken);
        var entry = string.IsNullOrWhiteSpace(model)
            ? models.FirstOrDefault(m => m.IsDemo)
            : models.FirstOrDefault(m => data.Relative(m.Path) == model.Trim() || m.Path == model.Trim());
        return entry is null ? SizePresets.ForFamily(null)[0].Width : SizePresets.For(entry)[0].Width;
    }
}
