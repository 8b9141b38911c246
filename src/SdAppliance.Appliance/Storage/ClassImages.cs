using System.Text.Json;
using System.Text.Json.Nodes;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Formats;

namespace SdAppliance.Appliance.Storage;

/// <summary>What generating class images asks for: the dataset's class folder, the class prompt, how many images it should hold.</summary>
/// <param name="Model">The base model (a path in the data folder, as a training request names it); null: the demo model.</param>
public sealed record ClassImagesRequest(string Dataset, string ClassFolder, string ClassPrompt, int Wanted, string? Model = null, int Resolution = 512);

/// <summary>
/// Class images for prior preservation (DreamBooth), kept in a plain sub-folder of the dataset: how many are there, and a
/// <see cref="JobKind.ClassImages"/> job that generates the missing ones with the base model, as the trainer would before a run.
/// </summary>
public sealed class ClassImages(DatasetService datasets, JobService jobs)
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
            ["resolution"] = request.Resolution,
        };
        if (!string.IsNullOrWhiteSpace(request.Model)) body["model"] = request.Model;
        return await jobs.SubmitAsync(new JobSubmission(JobKind.ClassImages, caller.UserId, JsonSerializer.SerializeToElement(body)), cancellationToken);
    }
}
