using Microsoft.EntityFrameworkCore;
using SdAppliance.Appliance.Persistence;

namespace SdAppliance.Appliance.Tests;

public sealed class ApplianceDbTests : IDisposable
{
    private readonly string folder = Directory.CreateTempSubdirectory("sdapp-db-").FullName;

    [Fact]
    public void A_fresh_database_file_gets_the_schema_from_the_migrations()
    {
        var options = new DbContextOptionsBuilder<ApplianceDb>().UseSqlite($"Data Source={Path.Combine(folder, "appliance.db")}").Options;
        using var db = new ApplianceDb(options);
        db.Database.Migrate();
        Assert.Equal(0, db.Jobs.Count());
    }

    public void Dispose() => Directory.Delete(folder, recursive: true);
}
