using SdAppliance.Appliance;
using SdAppliance.Appliance.Storage;
using SdAppliance.Web.A1111;
using SdAppliance.Web.Api;
using SdAppliance.Web.Security;

namespace SdAppliance.Web;

/// <summary>Builds and runs the appliance's web host; <c>sdapp serve</c> and the tests start it through here.</summary>
public static class ApplianceHost
{
    /// <param name="args">Host arguments: <c>--urls</c>, <c>--data DIR</c> (else <c>SDAPP_DATA</c>, else <c>./data</c>), any ASP.NET setting.</param>
    public static WebApplication Build(string[] args)
    {
        var builder = WebApplication.CreateBuilder(args);
        var options = Options(builder.Configuration);
        builder.Services.AddAppliance(options);
        builder.AddApplianceSecurity();
        builder.AddRestApi();
        builder.AddA1111Api();

        var app = builder.Build();
        app.UseApplianceSecurity();
        app.MapGet("/health", () => Results.Ok(new { status = "ok" })).AllowAnonymous();
        app.MapRestApi();
        app.MapA1111Api();
        app.MapStatusPage();
        return app;
    }

    public static async Task<int> RunAsync(string[] args)
    {
        await using var app = Build(args);
        await app.RunAsync();
        return 0;
    }

    /// <summary>The appliance's options from the host's configuration (<c>data</c>, <c>import_roots</c>) and the environment.</summary>
    internal static ApplianceOptions Options(IConfiguration configuration)
    {
        var data = DataFolder.Discover(configuration["data"]);
        return new ApplianceOptions
        {
            DataFolder = data.FullPath,
            ApplicationRoot = data.ApplicationRoot,
            ImportRoots = configuration.GetSection("import_roots").Get<string[]>() ?? [],
        };
    }
}
