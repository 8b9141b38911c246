namespace SdAppliance.Web.Api;

/// <summary>The REST API under <c>/api/v1</c>, its OpenAPI document, and the status page at <c>/</c>.</summary>
public static class RestApi
{
    public static WebApplicationBuilder AddRestApi(this WebApplicationBuilder builder) => builder;

    public static WebApplication MapRestApi(this WebApplication app) => app;

    public static WebApplication MapStatusPage(this WebApplication app) => app;
}
