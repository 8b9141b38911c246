using System.CommandLine;
using Microsoft.Extensions.DependencyInjection;
using SdAppliance.Appliance;
using SdAppliance.Appliance.Accounts;
using SdAppliance.Appliance.Persistence;
using SdAppliance.Cli.Commands;

namespace SdAppliance.Cli.Tests;

public sealed class AccountCommandsTests : IDisposable
{
    private readonly string data = Directory.CreateTempSubdirectory("sdapp-accounts-").FullName;

    public void Dispose() => Directory.Delete(data, recursive: true);

    private static (int ExitCode, string Output, string Error) Invoke(string stdin, params string[] args)
    {
        var root = new RootCommand { UserCommand.Create(new StringReader(stdin)), TokenCommand.Create() };
        using var output = new StringWriter();
        using var error = new StringWriter();
        var exit = root.Parse(args).Invoke(new InvocationConfiguration { Output = output, Error = error });
        return (exit, output.ToString(), error.ToString());
    }

    private async Task<T> WithAccountsAsync<T>(Func<AccountService, Task<T>> work)
    {
        await using var services = new ServiceCollection().AddAppliance(new ApplianceOptions { DataFolder = data }).BuildServiceProvider();
        await DatabaseMigration.MigrateAsync(services, CancellationToken.None);
        await using var scope = services.CreateAsyncScope();
        return await work(scope.ServiceProvider.GetRequiredService<AccountService>());
    }

    [Fact]
    public async Task User_add_then_token_create_gives_a_token_that_signs_in_as_that_user()
    {
        var (exit, output, error) = Invoke("Secret-pass-1\n", "user", "add", "alice", "--admin", "--password-stdin", "--data", data);
        Assert.True(exit == 0, error);
        Assert.Contains("alice (admin)", output);

        (exit, output, error) = Invoke("", "token", "create", "alice", "--name", "ci", "--data", data);
        Assert.True(exit == 0, error);
        var token = output.Trim();
        Assert.StartsWith(AccountService.TokenPrefix, token);
        Assert.Contains("shown this once", error);

        var (signedIn, users, tokens) = await WithAccountsAsync(async accounts =>
        {
            var user = await accounts.ValidateTokenAsync(token, CancellationToken.None);
            var all = await accounts.ListUsersAsync(CancellationToken.None);
            return (user, all, await accounts.ListTokensAsync(user!.Id, CancellationToken.None));
        });
        Assert.Equal("alice", signedIn?.UserName);
        Assert.Equal([new AccountView(signedIn!.Id, "alice", IsAdmin: true)], users);
        Assert.Equal("ci", Assert.Single(tokens).Name);
    }

    [Fact]
    public void User_add_without_password_stdin_names_the_flag_and_creates_nothing()
    {
        var (exit, _, error) = Invoke("Secret-pass-1\n", "user", "add", "bob", "--data", data);

        Assert.Equal(1, exit);
        Assert.StartsWith("error: --password-stdin: is required", error);
        Assert.False(File.Exists(Path.Combine(data, "appliance.db")));
    }

    [Fact]
    public void A_weak_password_is_refused_naming_the_flag()
    {
        var (exit, _, error) = Invoke("short\n", "user", "add", "bob", "--password-stdin", "--data", data);

        Assert.Equal(1, exit);
        Assert.StartsWith("error: --password-stdin: ", error);
        Assert.Single(error.Trim().Split('\n'));
    }

    [Fact]
    public void A_taken_name_is_refused_naming_the_argument()
    {
        Assert.Equal(0, Invoke("Secret-pass-1\n", "user", "add", "carol", "--password-stdin", "--data", data).ExitCode);

        var (exit, _, error) = Invoke("Secret-pass-2\n", "user", "add", "carol", "--password-stdin", "--data", data);

        Assert.Equal(1, exit);
        Assert.StartsWith("error: NAME: ", error);
        Assert.Contains("carol", error);
    }

    [Fact]
    public void Token_create_for_an_unknown_user_says_how_to_make_one()
    {
        var (exit, output, error) = Invoke("", "token", "create", "nobody", "--data", data);

        Assert.Equal(1, exit);
        Assert.Equal("", output);
        Assert.StartsWith("error: NAME: there is no user 'nobody'", error);
        Assert.Contains("sdapp user add nobody --password-stdin", error);
    }
}
