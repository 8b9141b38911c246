using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using SdAppliance.Appliance.Catalog;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Persistence;
using SdAppliance.Appliance.Storage;

namespace SdAppliance.Appliance;

/// <summary>Registers the appliance's services; the web host and the CLI call <see cref="AddAppliance"/>.</summary>
public static class ApplianceServices
{
    public static IServiceCollection AddAppliance(this IServiceCollection services, ApplianceOptions options)
    {
        services.AddSingleton(options);
        // The folders are there before anything (the database among them) is opened.
        var data = new DataFolder(options.DataFolder, options.ApplicationRoot).Create();
        services.AddSingleton(data);
        services.AddDbContextFactory<ApplianceDb>(db => db.UseSqlite($"Data Source={data.Database}"));
        services.AddSingleton<PathGuard>();
        services.AddSingleton<Ownership>();
        services.AddSingleton<ModelCatalog>();
        services.AddSingleton<DatasetService>();
        services.AddSingleton<OutputService>();
        services.AddHostedService<LeftoverCleanup>();
        services.AddSingleton<JobService>();
        return services;
    }
}
