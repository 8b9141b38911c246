using Microsoft.AspNetCore.Mvc;
using SdAppliance.Appliance.Catalog;
using SdAppliance.Formats;
using SdAppliance.Web.Security;

namespace SdAppliance.Web.Api;

/// <summary>A model as the API shows it: the catalog's entry without the server's own path.</summary>
public sealed record ModelView(
    ModelKind Kind, string Name, string Title, string RelativePath, long SizeBytes, DateTime ModifiedUtc, string? Family,
    string? PredictionType, string? ShortHash, string? Sha256, IReadOnlyDictionary<string, string> Metadata, int? Vectors,
    int? Dimension, string? OwnerId, bool IsPrivate, bool IsDemo, string? Problem)
{
    /// <summary>A base model's storage: diffusers, onnx, safetensors or ckpt.</summary>
    public string? Format { get; init; }

    /// <summary>The engines that can run a base model: libtorch, onnx.</summary>
    public IReadOnlyList<string> Backends { get; init; } = [];

    public static ModelView Of(ModelEntry e) => new(e.Kind, e.Name, e.Title, e.RelativePath, e.SizeBytes, e.ModifiedUtc, e.Family,
        e.PredictionType, e.ShortHash, e.Sha256, e.Metadata, e.Vectors, e.Dimension, e.OwnerId, e.IsPrivate, e.IsDemo, e.Problem)
    {
        Format = e.Format,
        Backends = e.Backends,
    };
}

/// <summary>An import of a file already on the server, inside an import root (<c>--import_roots:0 /srv/models</c>).</summary>
/// <param name="Path">The file or diffusers folder on the server.</param>
/// <param name="Link">Keep it where it is and list it (a link), instead of copying it into the data folder.</param>
public sealed record ServerImport(string Path, bool Link = false, bool Private = false);

/// <summary><c>/api/v1/models</c>: base models, LoRAs, embeddings and hypernetworks: list, import (upload or server path), delete.</summary>
internal static class ModelEndpoints
{
    public static void MapModels(this RouteGroupBuilder api)
    {
        var models = api.MapGroup("/models").WithTags("Models");
        models.MapGet("/", List).WithSummary("The models the caller may see; kind (checkpoint, lora, embedding, hypernetwork) narrows it");
        models.MapPost("/{kind}", Upload)
            .WithSummary("Imports an uploaded model file of that kind (multipart, one file; private=true keeps it to the caller)");
        models.MapPost("/{kind}/import", Import).WithSummary("Imports a file from the server, inside an import root");
        models.MapDelete("/{kind}/{**path}", Delete).WithSummary("Deletes a model (its path as the list gives it)");
    }

    private static async Task<IResult> List(HttpContext http, ModelCatalog catalog, CancellationToken cancellationToken, string? kind = null)
    {
        var caller = http.User.ToCaller();
        var kinds = kind is null ? Enum.GetValues<ModelKind>() : [ApiNames.Parse<ModelKind>("kind", kind)];
        var models = new List<ModelView>();
        foreach (var k in kinds) models.AddRange((await catalog.ListAsync(caller, k, cancellationToken)).Select(ModelView.Of));
        return TypedResults.Ok(models);
    }

    private static async Task<IResult> Upload(HttpContext http, ModelCatalog catalog, string kind, CancellationToken cancellationToken, [FromQuery] bool @private = false)
    {
        var modelKind = ApiNames.Parse<ModelKind>("kind", kind);
        if (!http.Request.HasFormContentType)
            throw new UserInputException("file", "an upload is a multipart/form-data request", "send the model as one form file (curl -F file=@model.safetensors)");
        var form = await http.Request.ReadFormAsync(cancellationToken);
        if (form.Files.Count != 1)
            throw new UserInputException("file", $"an upload holds one model file, got {form.Files.Count}", "send one file per request");
        var file = form.Files[0];
        await using var content = file.OpenReadStream();
        var model = await catalog.ImportAsync(http.User.ToCaller(), modelKind, file.FileName, content, @private, cancellationToken);
        return TypedResults.Created($"/api/v1/models?kind={kind}", ModelView.Of(model));
    }

    private static async Task<IResult> Import(HttpContext http, ModelCatalog catalog, string kind, ServerImport body, CancellationToken cancellationToken)
    {
        var model = await catalog.ImportFromServerAsync(http.User.ToCaller(), ApiNames.Parse<ModelKind>("kind", kind), body.Path, body.Link, body.Private, cancellationToken);
        return TypedResults.Created($"/api/v1/models?kind={kind}", ModelView.Of(model));
    }

    private static async Task<IResult> Delete(HttpContext http, ModelCatalog catalog, string kind, string path, CancellationToken cancellationToken) =>
        await catalog.DeleteAsync(http.User.ToCaller(), ApiNames.Parse<ModelKind>("kind", kind), path, cancellationToken)
            ? TypedResults.NoContent()
            : ApiProblems.NotFound($"{kind} '{path}'");
}
