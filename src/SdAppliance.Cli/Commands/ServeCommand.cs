using System.CommandLine;
using SdAppliance.Web;

namespace SdAppliance.Cli.Commands;

/// <summary>
/// <c>sdapp serve</c>: the appliance's web host (the status page, the REST and A1111-compatible APIs) until Ctrl+C or
/// SIGTERM, which <see cref="Interrupts"/> turns into the token the host stops on: running jobs are stopped the way the
/// host stops them (a training run saves its state and resumes at the next start).
/// </summary>
public static class ServeCommand
{
    public const string DefaultUrls = "http://localhost:5000";

    public static Command Create()
    {
        var urls = new Option<string>("--urls") { Description = "Where to listen; http://0.0.0.0:5000 for every address of this machine (the LAN)", DefaultValueFactory = _ => DefaultUrls };
        var data = new Option<string?>("--data") { Description = "The data folder (models, datasets, runs, outputs, the database); default $SDAPP_DATA, else ./data" };
        var command = new Command("serve", "Start the appliance: the web host with the REST API (/api/v1), the A1111-compatible API (/sdapi/v1) and the status page.")
        {
            urls, data,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            string[] args = ["--urls", parse.GetValue(urls)!];
            if (parse.GetValue(data) is { } folder) args = [.. args, "--data", folder];
            // A training job on several devices starts its ranks as sdapp train, with this same sdapp.
            string[] train = [.. SelfCommand.Program(), "train"];
            args = [.. args, .. train.SelectMany((part, i) => new[] { $"--training_command:{i}", part })];
            try
            {
                return await ApplianceHost.RunAsync(args, cancellationToken);
            }
            catch (OperationCanceledException)
            {
                return Interrupts.ExitCode;  // stopped before it had started
            }
            catch (Exception e)
            {
                return CliErrors.Report(parse.InvocationConfiguration.Error, e);
            }
        });
        return command;
    }
}
