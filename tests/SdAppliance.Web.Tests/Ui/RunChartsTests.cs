using Bunit;
using Microsoft.Extensions.DependencyInjection;
using MudBlazor.Services;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Runs;
using SdAppliance.Web.Components.Pages.Runs;

namespace SdAppliance.Web.Tests.Ui;

/// <summary>The run page's charts gain points as the job's events arrive.</summary>
public sealed class RunChartsTests
{
    private static JobEvent Step(long step) => new(step, DateTime.UtcNow, JobEventTypes.Step)
    {
        Step = step, TotalSteps = 100, Loss = 1.0 / step, SmoothedLoss = 1.0 / step, LearningRate = 1e-4,
    };

    [Fact]
    public async Task The_charts_draw_the_points_of_the_events_applied_so_far()
    {
        await using var ctx = new BunitContext();
        ctx.JSInterop.Mode = JSRuntimeMode.Loose;
        ctx.Services.AddMudServices();
        var watch = new RunWatch(maxPoints: 50);
        var cut = ctx.Render<RunCharts>(p => p.Add(c => c.Watch, watch).Add(c => c.Version, 0));
        Assert.Equal("0", cut.Find("[data-testid=loss-chart]").GetAttribute("data-points"));
        Assert.Contains("No steps yet", cut.Find("[data-testid=loss-chart]").TextContent, StringComparison.Ordinal);

        for (var s = 1; s <= 3; s++) watch.Apply(Step(s));
        cut.Render(p => p.Add(c => c.Watch, watch).Add(c => c.Version, watch.LastSequence));
        Assert.Equal("3", cut.Find("[data-testid=loss-chart]").GetAttribute("data-points"));
        Assert.Equal("3", cut.Find("[data-testid=lr-chart]").GetAttribute("data-points"));
        Assert.NotEmpty(cut.FindAll("[data-testid=loss-chart] svg path"));

        for (var s = 4; s <= 10; s++) watch.Apply(Step(s));
        cut.Render(p => p.Add(c => c.Watch, watch).Add(c => c.Version, watch.LastSequence));
        Assert.Equal("10", cut.Find("[data-testid=loss-chart]").GetAttribute("data-points"));
    }

    [Fact]
    public async Task The_last_100_steps_range_shows_only_the_window()
    {
        await using var ctx = new BunitContext();
        ctx.JSInterop.Mode = JSRuntimeMode.Loose;
        ctx.Services.AddMudServices();
        var watch = new RunWatch(maxPoints: 101);
        for (var s = 1; s <= 300; s++) watch.Apply(Step(s));
        var cut = ctx.Render<RunCharts>(p => p.Add(c => c.Watch, watch).Add(c => c.Version, watch.LastSequence));
        // All 300 steps in at most 101 points: buckets of 4 steps (1..3, 4..7, ... 296..299, 300).
        Assert.Equal("76", cut.Find("[data-testid=loss-chart]").GetAttribute("data-points"));
        cut.Find("[data-testid=range-last100]").Click();
        Assert.Equal("100", cut.Find("[data-testid=loss-chart]").GetAttribute("data-points"));
    }
}
