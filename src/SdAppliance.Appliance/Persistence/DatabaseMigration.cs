using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace SdAppliance.Appliance.Persistence;

/// <summary>Brings the database file to the current schema (through the migrations) before anything uses it.</summary>
public static class DatabaseMigration
{
    public static async Task MigrateAsync(IServiceProvider services, CancellationToken cancellationToken)
    {
        await using var db = await services.GetRequiredService<IDbContextFactory<ApplianceDb>>().CreateDbContextAsync(cancellationToken);
        await db.Database.MigrateAsync(cancellationToken);
        // WAL: requests, jobs and the CLI read while another writes; it is a property of the file, set once.
        await db.Database.ExecuteSqlRawAsync("PRAGMA journal_mode=WAL;", cancellationToken);
    }

    /// <summary>Registered first, so the host migrates before other hosted services start and before it serves.</summary>
    internal sealed class AtStart(IServiceProvider services) : IHostedService
    {
        public Task StartAsync(CancellationToken cancellationToken) => MigrateAsync(services, cancellationToken);

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
