namespace SdAppliance.Web;

/// <summary>Builds and runs the appliance's web host; <c>sdapp serve</c> and the tests start it through here.</summary>
public static class ApplianceHost
{
    public static WebApplication Build(string[] args)
    {
        var builder = WebApplication.CreateBuilder(args);
        var app = builder.Build();
        app.MapGet("/health", () => Results.Ok(new { status = "ok" }));
        return app;
    }

    public static async Task<int> RunAsync(string[] args)
    {
        await using var app = Build(args);
        await app.RunAsync();
        return 0;
    }
}
