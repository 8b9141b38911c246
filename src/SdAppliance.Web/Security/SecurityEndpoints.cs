namespace SdAppliance.Web.Security;

/// <summary>Authentication (cookies, Bearer tokens, HTTP Basic), authorization, setup and login.</summary>
public static class SecurityEndpoints
{
    public static WebApplicationBuilder AddApplianceSecurity(this WebApplicationBuilder builder) => builder;

    public static WebApplication UseApplianceSecurity(this WebApplication app) => app;
}
