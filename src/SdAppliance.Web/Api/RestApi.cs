using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Scalar.AspNetCore;
using SdAppliance.Web.Security;

namespace SdAppliance.Web.Api;

/// <summary>The REST API under <c>/api/v1</c>, its OpenAPI document (<c>/openapi/v1.json</c>) and reference (<c>/scalar</c>), and the status page at <c>/</c>.</summary>
public static class RestApi
{
    public const string Prefix = "/api/v1";

    public static WebApplicationBuilder AddRestApi(this WebApplicationBuilder builder)
    {
        var limits = builder.Configuration.GetSection(RequestLimits.Section).Get<RequestLimits>() ?? new RequestLimits();
        builder.Services.AddSingleton(limits);
        builder.Services.Configure<KestrelServerOptions>(kestrel => kestrel.Limits.MaxRequestBodySize = limits.MaxRequestBytes);
        builder.Services.Configure<FormOptions>(form =>
        {
            form.MultipartBodyLengthLimit = limits.MaxRequestBytes;
            form.ValueCountLimit = limits.MaxFormParts;
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

    public static WebApplication MapRestApi(this WebApplication app)
    {
        // Errors the endpoints do not write themselves (a body that is not JSON, a route that does not exist, a missing
        // credential) are ProblemDetails too, under /api only: the A1111 routes answer in A1111's shape.
        app.UseWhen(http => http.Request.Path.StartsWithSegments("/api"), api => api.UseStatusCodePages());

        var api = app.MapGroup(Prefix).RequireAuthorization().WithUserInputProblems();
        api.MapJobs();
        api.MapRuns();

        app.MapOpenApi().RequireAuthorization();
        app.MapScalarApiReference().RequireSignedInEvenIfAnonymous();
        return app;
    }

    public static WebApplication MapStatusPage(this WebApplication app)
    {
        app.MapGet("/", StatusPage.Render).RequireAuthorization().ExcludeFromDescription();
        return app;
    }
}
