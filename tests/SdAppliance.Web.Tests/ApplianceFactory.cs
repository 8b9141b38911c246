using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;

namespace SdAppliance.Web.Tests;

/// <summary>The appliance host on a fresh data folder (a real SQLite file) with the demo model of the repository.</summary>
public class ApplianceFactory : WebApplicationFactory<Program>
{
    public string DataFolder { get; } = Directory.CreateTempSubdirectory("sdapp-web-").FullName;

    protected override void ConfigureWebHost(IWebHostBuilder builder) => builder.UseSetting("data", DataFolder);

    /// <summary>A client signed in as a new user (an admin when <paramref name="admin"/>).</summary>
    public HttpClient CreateSignedInClient(bool admin = false) => CreateClient();

    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (disposing && Directory.Exists(DataFolder)) Directory.Delete(DataFolder, recursive: true);
    }
}
