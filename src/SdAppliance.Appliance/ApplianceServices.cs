using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using SdAppliance.Appliance.Accounts;
using SdAppliance.Appliance.Catalog;
using SdAppliance.Appliance.Generation;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Persistence;
using SdAppliance.Appliance.Runs;
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
        services.AddLogging();
        // Before the scheduler: hosted services start in this order, and the scheduler reads the jobs at its start.
        services.AddHostedService<DatabaseMigration.AtStart>();
        services.AddAccounts();
        services.AddSingleton<PathGuard>();
        services.AddSingleton<Ownership>();
        services.AddSingleton<ModelCatalog>();
        services.AddSingleton<ResumableUploads>();
        services.AddSingleton<ModelExports>();
        services.AddSingleton<DatasetService>();
        services.AddSingleton<ThumbnailCache>();
        services.AddSingleton<ClassImages>();
        services.AddSingleton<TaggerCatalog>();
        services.AddSingleton<VaeCatalog>();
        services.AddSingleton<AutoCaptions>();
        services.AddSingleton<OutputService>();
        services.AddHostedService<LeftoverCleanup>();
        services.AddSingleton<JobService>();
        services.AddSingleton<JobDownloads>();
        services.AddJobs();
        services.AddGeneration();
        services.AddSingleton<RunFiles>();
        services.AddSingleton<CheckpointGrid>();
        return services;
    }

    private static void AddJobs(this IServiceCollection services)
    {
        services.AddSingleton<JobScheduler>();
        services.AddSingleton<DeviceMonitor>();
        services.AddHostedService(provider => provider.GetRequiredService<JobScheduler>());
        services.AddSingleton<IJobRunner, TrainingJobRunner>();
        services.AddSingleton<TrainingSetup>();
        services.AddSingleton<IJobRunner, ClassImagesJobRunner>();
        services.AddSingleton<IJobRunner, ConversionJobRunner>();
        services.AddSingleton<IJobRunner, CaptioningJobRunner>();
    }

    private static void AddGeneration(this IServiceCollection services)
    {
        services.AddSingleton(new GenerationOptions());
        services.AddSingleton<GenerationService>();
        services.AddSingleton<GenerationJobs>();
        services.AddSingleton<IJobRunner, GenerationJobRunner>();
    }
}
