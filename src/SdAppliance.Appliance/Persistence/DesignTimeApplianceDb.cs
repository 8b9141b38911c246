using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Design;

namespace SdAppliance.Appliance.Persistence;

/// <summary>Lets <c>dotnet ef migrations add</c> build the model without a host.</summary>
internal sealed class DesignTimeApplianceDb : IDesignTimeDbContextFactory<ApplianceDb>
{
    public ApplianceDb CreateDbContext(string[] args) =>
        new(new DbContextOptionsBuilder<ApplianceDb>().UseSqlite("Data Source=design-time.db").Options);
}
