namespace SdAppliance.Web.A1111;

/// <summary>The A1111-compatible API at the host root (<c>/sdapi/v1/...</c>).</summary>
public static class A1111Api
{
    public static WebApplicationBuilder AddA1111Api(this WebApplicationBuilder builder) => builder;

    public static WebApplication MapA1111Api(this WebApplication app) => app;
}
