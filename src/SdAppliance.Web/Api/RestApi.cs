using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Scalar.AspNetCore;
using SdAppliance.Appliance;
using SdAppliance.Appliance.Storage;
using SdAppliance.Web.Security;

namespace SdAppliance.Web.Api;

/// <summary>The REST API under <c>/api/v1</c>, its OpenAPI document (<c>/openapi/v1.json</c>) and reference (<c>/scalar</c>), and the status page at <c>/</c>.</summary>
public static class RestApi
{
    public const string Prefix = "/api/v1";

    public static WebApplicationBuilder AddRestApi(this WebApplicationBuilder builder)
    {
        // The transport's limits follow the storage's (one home for them): nothing larger than the largest file the
        // storage would take is read, and no more parts than an upload may have; the storage checks each file.
        builder.Services.AddOptions<KestrelServerOptions>().Configure<ApplianceOptions>((kestrel, appliance) =>
            kestrel.Limits.MaxRequestBodySize = LargestRequest(appliance.Limits));
        builder.Services.AddOptions<FormOptions>().Configure<ApplianceOptions>((form, appliance) =>
        {
            form.MultipartBodyLengthLimit = LargestRequest(appliance.Limits);
            form.ValueCountLimit = 2 * appliance.Limits.MaxImagesPerUpload + FormFieldsBesideFiles;  // each image with its caption
        });
        builder.Services.ConfigureHttpJsonOptions(json =>
        {
            json.SerializerOptions.PropertyNamingPolicy = ApiNames.Policy;
            json.SerializerOptions.Converters.Add(new JsonStringEnumConverter(ApiNames.Policy));
        });
        builder.Services.AddProblemDetails();
        builder.Services.AddOpenApi();
        return builder;
    }

    /// <summary>Form fields an upload may have besides its files (a folder, a private flag).</summary>
    private const int FormFieldsBesideFiles = 16;

    /// <summary>A request body may hold the largest model file, or a full upload of the largest images, and its multipart framing.</summary>
    private static long LargestRequest(StorageLimits limits) =>
        Math.Max(limits.MaxModelBytes, limits.MaxImagesPerUpload * limits.MaxImageBytes) + (1 << 20);

    public static WebApplication MapRestApi(this WebApplication app)
    {
        // Errors the endpoints do not write themselves (a body that is not JSON, a route that does not exist, a missing
        // credential) are ProblemDetails too, under /api only: the A1111 routes answer in A1111's shape.
        app.UseWhen(http => http.Request.Path.StartsWithSegments("/api"), api => api.UseStatusCodePages());

        var api = app.MapGroup(Prefix).RequireAuthorization().WithUserInputProblems();
        api.MapJobs();
        api.MapRuns();
        api.MapDatasets();
        api.MapCaptioning();
        api.MapModels();
        api.MapOutputs();

        app.MapOpenApi().RequireAuthorization();
        app.MapScalarApiReference().RequireSignedInEvenIfAnonymous();
        return app;
    }
}
