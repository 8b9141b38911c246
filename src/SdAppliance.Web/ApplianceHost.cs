using System.Reflection;
using SdAppliance.Appliance;
using SdAppliance.Appliance.Storage;
using SdAppliance.Web.A1111;
using SdAppliance.Web.Api;
using SdAppliance.Web.Components;
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
        // A published app (sdapp) keeps the UI's assets in wwwroot beside its binaries, not in the folder it is started from.
        var publishedAssets = Path.Combine(AppContext.BaseDirectory, "wwwroot");
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions
        {
            Args = args,
            ApplicationName = AssetsManifestName(),
            WebRootPath = Directory.Exists(publishedAssets) ? publishedAssets : null,
        });
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
        builder.AddBrowserUi();

        var app = builder.Build();
        app.UseApplianceSecurity();
        app.MapGet("/health", () => Results.Ok(new { status = "ok" })).AllowAnonymous();
        app.MapRestApi();
        app.MapA1111Api();
        app.MapBrowserUi();
        return app;
    }

    /// <summary>Runs the host until <paramref name="stopping"/> is cancelled or, when it cannot be, until Ctrl+C or SIGTERM.</summary>
    public static async Task<int> RunAsync(string[] args, CancellationToken stopping = default)
    {
        await using var app = Build(args, callerHandlesSignals: stopping.CanBeCanceled);
        await app.RunAsync(stopping);
        return 0;
    }

    /// <summary>
    /// The name the UI's asset manifests go by: the program's (sdapp's when published) where its manifest is beside it,
    /// else the web host's own, as when a test host runs the host in its process.
    /// </summary>
    private static string AssetsManifestName()
    {
        var entry = Assembly.GetEntryAssembly()?.GetName().Name;
        return entry is not null && File.Exists(Path.Combine(AppContext.BaseDirectory, entry + ".staticwebassets.endpoints.json"))
            ? entry
            : typeof(ApplianceHost).Assembly.GetName().Name!;
    }

    /// <summary>The appliance's options from the host's configuration (<c>data</c>, <c>import_roots</c>, <c>limits</c>, <c>training_command</c>) and the environment.</summary>
    internal static ApplianceOptions Options(IConfiguration configuration)
    {
        var data = DataFolder.Discover(configuration["data"]);
        return new ApplianceOptions
        {
            DataFolder = data.FullPath,
            ApplicationRoot = data.ApplicationRoot,
            ImportRoots = configuration.GetSection("import_roots").Get<string[]>() ?? [],
            Limits = configuration.GetSection("limits").Get<StorageLimits>() ?? new StorageLimits(),
            TrainingCommand = configuration.GetSection("training_command").Get<string[]>() ?? [],
        };
    }
}
