using System.CommandLine;
using SdAppliance.Formats;

namespace SdAppliance.Cli.Commands;

/// <summary><c>sdapp token create NAME [--name LABEL] [--data DIR]</c>: a personal API token for user NAME, printed once.</summary>
public static class TokenCommand
{
    private static readonly Dictionary<string, string> Flags = new() { ["name"] = "--name", ["user"] = "NAME" };

    public static Command Create()
    {
        var user = new Argument<string>("NAME") { Description = "The user the token signs in as" };
        var label = new Option<string>("--name") { Description = "What the token is for, shown in the token list", DefaultValueFactory = _ => "cli" };
        var data = AccountsAccess.DataOption();

        var create = new Command("create", "Create an API token for user NAME and print it (only this once; it is stored hashed).") { user, label, data };
        create.SetAction((parse, cancellationToken) =>
        {
            var io = parse.InvocationConfiguration;
            return AccountsAccess.RunAsync(parse.GetValue(data), io.Error, Flags, async accounts =>
            {
                var userName = parse.GetValue(user)!;
                var account = await accounts.FindByNameAsync(userName, cancellationToken)
                    ?? throw new UserInputException("user", $"there is no user '{userName}'", $"make one with 'sdapp user add {userName} --password-stdin'");
                var created = await accounts.CreateTokenAsync(account.Id, parse.GetValue(label)!, cancellationToken);
                // The token alone on standard output, so TOKEN=$(sdapp token create NAME) works; the advice goes to the error stream.
                io.Output.WriteLine(created.Secret);
                io.Error.WriteLine($"token '{created.Token.Name}' for {account.Name}: shown this once, store it now (send it as 'Authorization: Bearer <token>')");
                return 0;
            }, cancellationToken);
        });

        return new Command("token", "Manage personal API tokens.") { create };
    }
}
