using Microsoft.AspNetCore.Identity.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore;
using SdAppliance.Appliance.Accounts;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Storage;

namespace SdAppliance.Appliance.Persistence;

/// <summary>The appliance database (SQLite): accounts (ASP.NET Core Identity, API tokens), jobs, settings; its schema changes through migrations.</summary>
public sealed class ApplianceDb(DbContextOptions<ApplianceDb> options) : IdentityDbContext<ApplianceUser>(options)
{
    public DbSet<Job> Jobs => Set<Job>();

    public DbSet<Setting> Settings => Set<Setting>();

    public DbSet<ApiToken> ApiTokens => Set<ApiToken>();

    public DbSet<StoredItem> StoredItems => Set<StoredItem>();

    protected override void OnModelCreating(ModelBuilder builder)
    {
        base.OnModelCreating(builder);
        builder.Entity<Setting>().HasKey(s => s.Key);
        AccountModel.Configure(builder);
        builder.Entity<StoredItem>().Property(i => i.Area).HasConversion<string>();
        builder.Entity<StoredItem>().HasIndex(i => new { i.Area, i.Path }).IsUnique();
        builder.Entity<StoredItem>().HasIndex(i => i.OwnerId);
    }
}
