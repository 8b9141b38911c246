using System.Text.Json;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Persistence;
using SdAppliance.Appliance.Storage;

namespace SdAppliance.Appliance.Tests.Jobs;

/// <summary>The appliance's services on a data folder, with the runners a test gives; disposing stops the scheduler (running jobs stay running in the database).</summary>
internal sealed class TestAppliance : IAsyncDisposable
{
    /// <summary>The bound of every wait in these tests: a hung job fails the test instead of hanging the suite.</summary>
    public static readonly TimeSpan Patience = TimeSpan.FromMinutes(3);

    private readonly ServiceProvider provider;

    private TestAppliance(ServiceProvider provider)
    {
        this.provider = provider;
        Jobs = provider.GetRequiredService<JobService>();
        Scheduler = provider.GetRequiredService<JobScheduler>();
    }

    public JobService Jobs { get; }

    public JobScheduler Scheduler { get; }

    /// <summary>One of the appliance's services.</summary>
    public T Service<T>() where T : notnull => provider.GetRequiredService<T>();

    /// <param name="runners">The runners to use instead of the appliance's own; null: the appliance's own.</param>
    /// <param name="configure">Changes to the appliance's services (an option of its own), after AddAppliance.</param>
    /// <param name="trainingCommand">What starts the ranks of a training job on several devices (ApplianceOptions.TrainingCommand).</param>
    public static async Task<TestAppliance> StartAsync(string dataFolder, IEnumerable<IJobRunner>? runners, IReadOnlyList<string>? devices = null,
        Action<IServiceCollection>? configure = null, IReadOnlyList<string>? trainingCommand = null)
    {
        var services = new ServiceCollection();
        services.AddAppliance(OptionsFor(dataFolder, devices, trainingCommand));
        configure?.Invoke(services);
        if (runners is not null)
        {
            services.RemoveAll<IJobRunner>();
            foreach (var runner in runners) services.AddSingleton(runner);
        }
        var appliance = new TestAppliance(services.BuildServiceProvider());
        using var timeout = new CancellationTokenSource(Patience);
        await DatabaseMigration.MigrateAsync(appliance.provider, timeout.Token);
        await appliance.Scheduler.StartAsync(timeout.Token);
        return appliance;
    }

    public static ApplianceOptions OptionsFor(string dataFolder, IReadOnlyList<string>? devices = null, IReadOnlyList<string>? trainingCommand = null) =>
        new() { DataFolder = dataFolder, ApplicationRoot = RepositoryRoot, Devices = devices ?? ["cpu"], TrainingCommand = trainingCommand ?? [] };

    /// <summary>The guard the runners resolve request paths with, on <paramref name="dataFolder"/>.</summary>
    public static PathGuard PathsFor(string dataFolder) => new(new DataFolder(dataFolder, RepositoryRoot), OptionsFor(dataFolder));

    public Task<JobView> SubmitAsync(JobKind kind, string owner, object request, int priority = 0) =>
        Jobs.SubmitAsync(new JobSubmission(kind, owner, JsonSerializer.SerializeToElement(request), priority), CancellationToken.None);

    public async Task<JobView> WaitAsync(Guid id)
    {
        using var timeout = new CancellationTokenSource(Patience);
        return await Jobs.WaitAsync(id, timeout.Token);
    }

    public async ValueTask DisposeAsync()
    {
        await provider.DisposeAsync();
        SqliteConnection.ClearAllPools();
    }

    /// <summary>The repository (holding models/demo), found upwards from the test's binaries.</summary>
    public static string RepositoryRoot { get; } = FindRoot();

    public static string DemoModel => Path.Combine(RepositoryRoot, "models", "demo");

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (Directory.Exists(Path.Combine(dir.FullName, "models", "demo"))) return dir.FullName;
        throw new DirectoryNotFoundException("models/demo not found above " + AppContext.BaseDirectory);
    }
}

/// <summary>
/// A runner whose jobs run until the test releases them (or fails them), recording the order they started in and how
/// many ran at once; a real runner class of these tests, not a stand-in for one of the appliance's.
/// </summary>
internal sealed class ControlledRunner(JobKind kind, bool usesDevice, bool completeAtOnce = false) : IJobRunner
{
    private readonly Lock gate = new();
    private readonly Dictionary<Guid, TaskCompletionSource<JsonElement?>> releases = [];
    private readonly Dictionary<Guid, TaskCompletionSource> starts = [];
    private int runningNow;

    public JobKind Kind => kind;

    public bool UsesDevice => usesDevice;

    /// <summary>The devices a job wants: the request's num_processes, as the training runner reads it.</summary>
    public int DevicesWanted(JsonElement request) =>
        !usesDevice ? 0 : request.ValueKind == JsonValueKind.Object && request.TryGetProperty("num_processes", out var n) ? n.GetInt32() : 1;

    public List<Guid> StartOrder { get; } = [];

    public int MostAtOnce { get; private set; }

    public async Task<JsonElement?> RunAsync(JobContext context, CancellationToken cancellationToken)
    {
        TaskCompletionSource<JsonElement?> release;
        lock (gate)
        {
            StartOrder.Add(context.Job.Id);
            MostAtOnce = Math.Max(MostAtOnce, ++runningNow);
            release = Release(context.Job.Id);
            Started(context.Job.Id).TrySetResult();
        }
        try
        {
            context.Publish(new JobEvent(0, default, JobEventTypes.Log) { Message = "started on " + context.Device });
            if (completeAtOnce) return JsonSerializer.SerializeToElement(new { done = true });
            return await release.Task.WaitAsync(cancellationToken);
        }
        finally
        {
            lock (gate)
            {
                runningNow--;
                releases.Remove(context.Job.Id);
            }
        }
    }

    public void Complete(Guid job, object? result = null)
    {
        lock (gate) Release(job).TrySetResult(result is null ? null : JsonSerializer.SerializeToElement(result));
    }

    public void Fail(Guid job, Exception error)
    {
        lock (gate) Release(job).TrySetException(error);
    }

    public Task WaitStartedAsync(Guid job)
    {
        lock (gate) return Started(job).Task.WaitAsync(TestAppliance.Patience);
    }

    private TaskCompletionSource<JsonElement?> Release(Guid job)
    {
        if (!releases.TryGetValue(job, out var release)) releases[job] = release = new(TaskCreationOptions.RunContinuationsAsynchronously);
        return release;
    }

    private TaskCompletionSource Started(Guid job)
    {
        if (!starts.TryGetValue(job, out var started)) starts[job] = started = new(TaskCreationOptions.RunContinuationsAsynchronously);
        return started;
    }
}
