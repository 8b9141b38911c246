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
    /// <param name="callerHandlesSignals">True when the caller stops the host itself (<c>sdapp serve</c>, whose one Ctrl+C handler
    /// cancels the token given to <see cref="RunAsync"/>); the host then registers no Ctrl+C / SIGTERM handler of its own.</param>
    public static WebApplication Build(string[] args, bool callerHandlesSignals = false)
    {
        var builder = WebApplication.CreateBuilder(args);
        if (callerHandlesSignals) builder.Services.AddSingleton<IHostLifetime, CallerStoppedLifetime>();
        // Every SQL command and every request at Information would bury the server's own lines (and slow it), as in
        // ASP.NET's own template; their warnings and errors stay.
        builder.Logging.AddFilter("Microsoft.EntityFrameworkCore", LogLevel.Warning);
        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
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

    /// <summary>Runs the host until <paramref name="stopping"/> is cancelled or, when it cannot be, until Ctrl+C or SIGTERM.</summary>
    public static async Task<int> RunAsync(string[] args, CancellationToken stopping = default)
    {
        await using var app = Build(args, callerHandlesSignals: stopping.CanBeCanceled);
        await app.RunAsync(stopping);
        return 0;
    }

    /// <summary>The appliance's options from the host's configuration (<c>data</c>, <c>import_roots</c>, <c>limits</c>) and the environment.</summary>
    internal static ApplianceOptions Options(IConfiguration configuration)
    {
        var data = DataFolder.Discover(configuration["data"]);
        return new ApplianceOptions
        {
            DataFolder = data.FullPath,
            ApplicationRoot = data.ApplicationRoot,
            ImportRoots = configuration.GetSection("import_roots").Get<string[]>() ?? [],
            Limits = configuration.GetSection("limits").Get<StorageLimits>() ?? new StorageLimits(),
        };
    }
}
