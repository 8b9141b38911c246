using System.Security.Claims;
using System.Text.Json;
using Bunit;
using Bunit.TestDoubles;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using MudBlazor.Services;
using SdAppliance.Appliance;
using SdAppliance.Appliance.Accounts;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Persistence;
using SdAppliance.Appliance.Storage;
using SdAppliance.Imaging;
using SdAppliance.Web.Components;
using SdAppliance.Web.Components.Pages;

namespace SdAppliance.Web.Tests.Ui;

/// <summary>
/// The dashboard over the appliance's real services on a temp data folder (no scheduler runs: submitted jobs stay
/// queued): the devices, the caller's part of the queue, cancel, an admin's reorder, the caller's latest outputs.
/// </summary>
public sealed class DashboardTests : UiAppliance
{
    private static string[] Rows(IRenderedComponent<Dashboard> page) =>
        [.. page.FindAll("[data-testid=queued-job]").Select(row => row.GetAttribute("data-job")!)];

    [Fact]
    public async Task A_user_sees_the_devices_their_own_jobs_and_outputs_and_cancels_a_job()
    {
        var alice = await UserAsync("alice");
        var bob = await UserAsync("bob");
        var first = await SubmitAsync(alice, "a red fox in the snow");
        var second = await SubmitAsync(alice, "a lighthouse at dusk");
        await SubmitAsync(bob, "bob's secret prompt");
        var outputs = Ctx.Services.GetRequiredService<OutputService>();
        var mine = await outputs.SaveAsync(alice.Id, new RgbImage(8, 8, 3), 42, None);
        var his = await outputs.SaveAsync(bob.Id, new RgbImage(8, 8, 3), 7, None);
        SignIn(alice);

        var page = Ctx.Render<Dashboard>();

        page.WaitForAssertion(() => Assert.Equal([first.Id.ToString(), second.Id.ToString()], Rows(page)));
        Assert.DoesNotContain("bob's secret prompt", page.Markup);
        Assert.Contains("a red fox in the snow", page.Markup);
        Assert.Empty(page.FindAll("[data-testid=move-up]"));  // reordering is for admins
        var device = Assert.Single(page.FindAll("[data-testid=dashboard-device]"));
        Assert.Contains("in use", device.TextContent);
        Assert.Contains("CPU", device.TextContent);
        var image = Assert.Single(page.FindAll("[data-testid=outputs] img"));
        Assert.Equal("/api/v1/outputs/" + mine.Path, image.GetAttribute("src"));
        Assert.DoesNotContain(his.Path, page.Markup);
        Assert.Single(page.FindAll("[data-testid=nothing-running]"));

        page.FindAll("[data-testid=cancel-queued]")[0].Click();

        page.WaitForAssertion(() => Assert.Equal([second.Id.ToString()], Rows(page)));
        var cancelled = await Ctx.Services.GetRequiredService<JobService>().GetAsync(new Caller(alice.Id, false), first.Id, None);
        Assert.Equal(JobState.Cancelled, cancelled!.State);
    }

    [Fact]
    public async Task An_admin_sees_everyones_queue_by_owner_and_moves_a_job_up()
    {
        var root = await UserAsync("root", admin: true);
        var alice = await UserAsync("alice");
        var bob = await UserAsync("bob");
        var a1 = await SubmitAsync(alice, "a1");
        var a2 = await SubmitAsync(alice, "a2");
        var b1 = await SubmitAsync(bob, "b1");
        SignIn(root);

        var page = Ctx.Render<Dashboard>();

        // Users take turns: alice's second job waits behind bob's first.
        string[] expected = [a1.Id.ToString(), b1.Id.ToString(), a2.Id.ToString()];
        page.WaitForAssertion(() => Assert.Equal(expected, Rows(page)));
        var owners = page.FindAll("[data-testid=queued-job] td:nth-child(3)").Select(td => td.TextContent.Trim());
        Assert.Equal(["alice", "bob", "alice"], owners);
        Assert.True(page.FindAll("[data-testid=move-up]")[0].HasAttribute("disabled"));

        page.FindAll("[data-testid=move-up]")[2].Click();

        string[] moved = [a1.Id.ToString(), a2.Id.ToString(), b1.Id.ToString()];
        page.WaitForAssertion(() => Assert.Equal(moved, Rows(page)));
        var queue = await Ctx.Services.GetRequiredService<JobService>().QueueAsync(new Caller(root.Id, true), None);
        Assert.Equal(moved, queue.Select(j => j.Id.ToString()));
    }
}
