using System.Runtime.CompilerServices;
using Microsoft.AspNetCore.Mvc;
using SdAppliance.Appliance.Storage;
using SdAppliance.Web.Security;

namespace SdAppliance.Web.Api;

/// <summary>What creates a dataset.</summary>
/// <param name="Name">The folder name under <c>datasets/</c>, what a training request's <c>data</c> names (<c>datasets/NAME</c>).</param>
/// <param name="Private">Seen by its owner and admins only; shared datasets are seen by everyone, changed by their owner.</param>
public sealed record DatasetCreation(string Name, bool Private = false);

/// <summary>An image's caption; null removes its caption file.</summary>
public sealed record CaptionBody(string? Caption);

/// <summary><c>/api/v1/datasets</c>: create, list, upload many images at once, captions, delete.</summary>
internal static class DatasetEndpoints
{
    public static void MapDatasets(this RouteGroupBuilder api)
    {
        var datasets = api.MapGroup("/datasets").WithTags("Datasets");
        datasets.MapGet("/", List).WithSummary("The datasets the caller may see");
        datasets.MapPost("/", Create).WithSummary("Creates an empty dataset");
        datasets.MapGet("/{name}", Get).WithSummary("One dataset");
        datasets.MapDelete("/{name}", Delete).WithSummary("Deletes a dataset with its images");
        datasets.MapGet("/{name}/images", Images).WithSummary("The images with their captions");
        datasets.MapPost("/{name}/images", Upload)
            .WithSummary("Adds images and .txt captions (multipart, any number of files); folder=N_name puts them in a kohya repeat folder; all or none land");
        datasets.MapGet("/{name}/images/{**image}", Image).WithSummary("Downloads one image");
        datasets.MapDelete("/{name}/images/{**image}", DeleteImage).WithSummary("Deletes an image and its caption");
        datasets.MapGet("/{name}/captions/{**image}", Caption).WithSummary("An image's caption");
        datasets.MapPut("/{name}/captions/{**image}", SetCaption).WithSummary("Sets (or, with null, removes) an image's caption");
    }

    private static async Task<IResult> List(HttpContext http, DatasetService datasets, CancellationToken cancellationToken) =>
        TypedResults.Ok(await datasets.ListAsync(http.User.ToCaller(), cancellationToken));

    private static async Task<IResult> Create(HttpContext http, DatasetService datasets, DatasetCreation body, CancellationToken cancellationToken)
    {
        var dataset = await datasets.CreateAsync(http.User.ToCaller(), body.Name, body.Private, cancellationToken);
        return TypedResults.Created($"/api/v1/datasets/{Uri.EscapeDataString(dataset.Name)}", dataset);
    }

    private static async Task<IResult> Get(HttpContext http, DatasetService datasets, string name, CancellationToken cancellationToken) =>
        await datasets.GetAsync(http.User.ToCaller(), name, cancellationToken) is { } dataset ? TypedResults.Ok(dataset) : NoDataset(name);

    private static async Task<IResult> Delete(HttpContext http, DatasetService datasets, string name, CancellationToken cancellationToken) =>
        await datasets.DeleteAsync(http.User.ToCaller(), name, cancellationToken) ? TypedResults.NoContent() : NoDataset(name);

    private static async Task<IResult> Images(HttpContext http, DatasetService datasets, string name, CancellationToken cancellationToken) =>
        await datasets.ListImagesAsync(http.User.ToCaller(), name, cancellationToken) is { } images ? TypedResults.Ok(images) : NoDataset(name);

    private static async Task<IResult> Upload(HttpContext http, DatasetService datasets, string name, [FromQuery] string? folder, CancellationToken cancellationToken)
    {
        if (!http.Request.HasFormContentType)
            throw new Formats.UserInputException("files", "an upload is a multipart/form-data request", "send the images as form files (curl -F file=@a.png -F file=@a.txt)");
        var form = await http.Request.ReadFormAsync(cancellationToken);
        var added = await datasets.AddImagesAsync(http.User.ToCaller(), name, folder, Uploads(form.Files, cancellationToken), cancellationToken);
        return TypedResults.Ok(added);
    }

    private static async IAsyncEnumerable<DatasetUpload> Uploads(IFormFileCollection files, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        foreach (var file in files)
        {
            cancellationToken.ThrowIfCancellationRequested();
            await using var content = file.OpenReadStream();
            yield return new DatasetUpload(file.FileName, content);
        }
    }

    private static async Task<IResult> Image(HttpContext http, DatasetService datasets, string name, string image, CancellationToken cancellationToken) =>
        await datasets.OpenImageAsync(http.User.ToCaller(), name, image, cancellationToken) is { } file ? Files.Send(file) : NoImage(name, image);

    private static async Task<IResult> DeleteImage(HttpContext http, DatasetService datasets, string name, string image, CancellationToken cancellationToken) =>
        await datasets.DeleteImageAsync(http.User.ToCaller(), name, image, cancellationToken) ? TypedResults.NoContent() : NoImage(name, image);

    private static async Task<IResult> Caption(HttpContext http, DatasetService datasets, string name, string image, CancellationToken cancellationToken) =>
        await datasets.GetCaptionAsync(http.User.ToCaller(), name, image, cancellationToken) is (true, var caption)
            ? TypedResults.Ok(new CaptionBody(caption))
            : NoImage(name, image);

    private static async Task<IResult> SetCaption(HttpContext http, DatasetService datasets, string name, string image, CaptionBody body, CancellationToken cancellationToken) =>
        await datasets.SetCaptionAsync(http.User.ToCaller(), name, image, body.Caption, cancellationToken) ? TypedResults.Ok(body) : NoImage(name, image);

    private static IResult NoDataset(string name) => ApiProblems.NotFound($"dataset '{name}'");

    private static IResult NoImage(string name, string image) => ApiProblems.NotFound($"image '{image}' in dataset '{name}'");
}
