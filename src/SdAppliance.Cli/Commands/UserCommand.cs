using System.CommandLine;

namespace SdAppliance.Cli.Commands;

/// <summary><c>sdapp user add NAME [--admin] --password-stdin [--data DIR]</c>: an account for scripted installs.</summary>
public static class UserCommand
{
    private static readonly Dictionary<string, string> Flags = new() { ["name"] = "NAME", ["password"] = "--password-stdin" };

    public static Command Create() => Create(Console.In);

    /// <param name="input">Where the password is read from (standard input).</param>
    internal static Command Create(TextReader input)
    {
        var name = new Argument<string>("NAME") { Description = "The user's name (letters, digits and -._@+)" };
        var admin = new Option<bool>("--admin") { Description = "Make an admin (manages users, sees every job)" };
        var passwordStdin = new Option<bool>("--password-stdin") { Description = "Read the password from the first line of standard input (required: never on the command line)" };
        var data = AccountsAccess.DataOption();

        var add = new Command("add", "Create a user; the password comes from standard input.") { name, admin, passwordStdin, data };
        add.SetAction((parse, cancellationToken) =>
        {
            var error = parse.InvocationConfiguration.Error;
            if (!parse.GetValue(passwordStdin))
                return Task.FromResult(CliErrors.Report(error, new UsageException(
                    "--password-stdin: is required; the password is read from standard input so it stays out of the shell history (printf '%s\\n' \"$PASSWORD\" | sdapp user add NAME --password-stdin)")));
            return AccountsAccess.RunAsync(parse.GetValue(data), error, Flags, async accounts =>
            {
                var password = await input.ReadLineAsync(cancellationToken) ?? "";
                var user = await accounts.CreateUserAsync(parse.GetValue(name)!, password, parse.GetValue(admin), cancellationToken);
                parse.InvocationConfiguration.Output.WriteLine($"created user {user.Name}{(user.IsAdmin ? " (admin)" : "")}");
                return 0;
            }, cancellationToken);
        });

        return new Command("user", "Manage the appliance's accounts (for scripted installs; the web page /setup makes the first admin too).") { add };
    }
}
