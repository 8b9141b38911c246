using System.CommandLine;
using Microsoft.Extensions.DependencyInjection;
using SdAppliance.Appliance;
using SdAppliance.Appliance.Accounts;
using SdAppliance.Appliance.Persistence;
using SdAppliance.Appliance.Storage;

namespace SdAppliance.Cli.Commands;

/// <summary>What <c>sdapp user</c> and <c>sdapp token</c> share: <c>--data</c>, and the appliance's accounts on that folder's database.</summary>
internal static class AccountsAccess
{
    public static Option<string?> DataOption() =>
        new("--data") { Description = $"The data folder (default: ${DataFolder.EnvironmentVariable}, else ./data)", HelpName = "DIR" };

    /// <summary>
    /// Runs <paramref name="work"/> with an <see cref="AccountService"/> on the data folder's database (migrated
    /// first, so a fresh folder works); a refusal is one line naming the argument, exit 1.
    /// </summary>
    /// <param name="flags">The command's words for the library's field names (see <see cref="CliErrors.Report"/>).</param>
    public static async Task<int> RunAsync(string? dataOption, TextWriter error, IReadOnlyDictionary<string, string> flags,
        Func<AccountService, Task<int>> work, CancellationToken cancellationToken)
    {
        try
        {
            var data = DataFolder.Discover(dataOption);
            await using var services = new ServiceCollection()
                .AddAppliance(new ApplianceOptions { DataFolder = data.FullPath, ApplicationRoot = data.ApplicationRoot })
                .BuildServiceProvider();
            await DatabaseMigration.MigrateAsync(services, cancellationToken);
            await using var scope = services.CreateAsyncScope();
            return await work(scope.ServiceProvider.GetRequiredService<AccountService>());
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            return CliErrors.Cancelled(error);
        }
        catch (Exception e)
        {
            return CliErrors.Report(error, e, flags);
        }
    }
}
