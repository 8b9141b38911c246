using Bunit;
using SdAppliance.Web.Components.Pages.Admin;

namespace SdAppliance.Web.Tests.Ui;

/// <summary>The admin's users page: add a user (the refusal at its field), the admin role, delete; the service's rules shown where they bite.</summary>
public sealed class UsersPageTests : UiAppliance
{
    private static string[] Names(IRenderedComponent<Users> page) =>
        [.. page.FindAll("[data-testid=user-row]").Select(row => row.GetAttribute("data-user")!)];

    [Fact]
    public async Task An_admin_adds_a_user_with_the_refusal_at_the_field_and_cannot_delete_themselves()
    {
        var root = await UserAsync("root", admin: true);
        SignIn(root);
        var page = Ctx.Render<Users>();
        page.WaitForAssertion(() => Assert.Equal(["root"], Names(page)));
        // Your own row has no delete to click.
        Assert.Empty(page.FindAll("[data-user=root] [data-testid=delete-user]"));

        page.Find("[data-testid=new-user-name] input, input[data-testid=new-user-name]").Change("erin");
        page.Find("[data-testid=new-user-password] input, input[data-testid=new-user-password]").Change("short");
        page.Find("[data-testid=add-user]").Click();
        page.WaitForAssertion(() => Assert.Contains("Passwords must be at least", page.Find(".mud-input-control:has([data-testid=new-user-password])").TextContent), TimeSpan.FromSeconds(5));
        Assert.Equal(["root"], Names(page));

        page.Find("[data-testid=new-user-password] input, input[data-testid=new-user-password]").Change("Erin-pass-123");
        page.Find("[data-testid=add-user]").Click();
        page.WaitForAssertion(() => Assert.Equal(["erin", "root"], Names(page)));
        Assert.Contains(await UsersAsync(), u => u is { Name: "erin", IsAdmin: false });
    }

    [Fact]
    public async Task The_last_admin_keeps_the_role_and_another_user_is_made_admin_and_deleted()
    {
        var root = await UserAsync("root", admin: true);
        var erin = await UserAsync("erin");
        SignIn(root);
        var page = Ctx.Render<Users>();
        page.WaitForAssertion(() => Assert.Equal(["erin", "root"], Names(page)));

        page.Find("[data-user=root] [data-testid=admin-switch] input, [data-user=root] input[data-testid=admin-switch]").Change(false);
        page.WaitForAssertion(() => Assert.Contains("only admin", page.Find("[data-testid=users-problem]").TextContent));
        Assert.Contains(await UsersAsync(), u => u is { Name: "root", IsAdmin: true });

        page.Find("[data-user=erin] [data-testid=admin-switch] input, [data-user=erin] input[data-testid=admin-switch]").Change(true);
        page.WaitForAssertion(() => Assert.Equal("admin", page.Find("[data-user=erin] .mud-chip").TextContent.Trim()));
        Assert.Contains(await UsersAsync(), u => u is { Name: "erin", IsAdmin: true });
        Assert.Empty(page.FindAll("[data-testid=users-problem]"));

        page.Find("[data-user=erin] [data-testid=delete-user]").Click();
        page.Find("[data-testid=confirm-delete]").Click();
        page.WaitForAssertion(() => Assert.Equal(["root"], Names(page)));
        Assert.DoesNotContain(await UsersAsync(), u => u.Id == erin.Id);
    }
}
