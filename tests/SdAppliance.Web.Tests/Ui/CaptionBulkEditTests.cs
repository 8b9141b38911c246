using Bunit;
using Microsoft.AspNetCore.Components;
using Microsoft.Extensions.DependencyInjection;
using MudBlazor.Services;
using SdAppliance.Appliance.Storage;
using SdAppliance.Web.Components.Pages.Datasets;

namespace SdAppliance.Web.Tests.Ui;

/// <summary>The dataset page's bulk caption edit panel: its checks at the field, what it asks the page to apply, the tag table's filter.</summary>
public sealed class CaptionBulkEditTests
{
    private static readonly string?[] Captions = ["a cat, red", "sks, a cat", null];

    private static BunitContext Context()
    {
        var ctx = new BunitContext();
        ctx.Services.AddMudServices();
        ctx.JSInterop.Mode = JSRuntimeMode.Loose;
        return ctx;
    }

    private static IRenderedComponent<CaptionBulkEdit> Render(BunitContext ctx, List<CaptionEdit> applied, List<string?> filters, string? filter = null) =>
        ctx.Render<CaptionBulkEdit>(p => p
            .Add(c => c.Captions, Captions)
            .Add(c => c.Filter, filter)
            .Add(c => c.FilterChanged, EventCallback.Factory.Create<string?>(new object(), f => filters.Add(f)))
            .Add(c => c.OnApply, EventCallback.Factory.Create<CaptionEdit>(new object(), e => applied.Add(e))));

    private static AngleSharp.Dom.IElement Input(IRenderedComponent<CaptionBulkEdit> cut, string testId) =>
        cut.Find($"[data-testid='{testId}'] input, input[data-testid='{testId}']");

    [Fact]
    public async Task An_empty_trigger_word_is_refused_at_its_field_and_nothing_is_applied()
    {
        await using var ctx = Context();
        List<CaptionEdit> applied = [];
        var cut = Render(ctx, applied, []);

        await cut.Find("[data-testid='add-trigger']").ClickAsync(new());

        Assert.Empty(applied);
        Assert.Contains("trigger: is empty", cut.Markup, StringComparison.Ordinal);
        Assert.Contains("type the trigger word", cut.Markup, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_trigger_word_says_how_many_captions_it_changes_and_is_applied()
    {
        await using var ctx = Context();
        List<CaptionEdit> applied = [];
        var cut = Render(ctx, applied, []);

        await Input(cut, "trigger-word").InputAsync(new() { Value = "sks" });
        cut.WaitForAssertion(() => Assert.Contains("changes 2 of 3 captions", cut.Markup, StringComparison.Ordinal));   // "sks, a cat" has it first
        await cut.Find("[data-testid='add-trigger']").ClickAsync(new());

        Assert.Equal([new CaptionEdit(CaptionEditKind.AddTrigger, "sks")], applied);
        Assert.DoesNotContain("is empty", cut.Markup, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_tag_with_a_comma_is_refused_at_the_tag_field()
    {
        await using var ctx = Context();
        List<CaptionEdit> applied = [];
        var cut = Render(ctx, applied, []);

        await Input(cut, "remove-tag-text").InputAsync(new() { Value = "a, b" });
        await cut.Find("[data-testid='remove-tag']").ClickAsync(new());

        Assert.Empty(applied);
        Assert.Contains("tag: 'a, b' has a comma", cut.Markup, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_tag_table_counts_captions_and_a_click_filters_then_clears()
    {
        await using var ctx = Context();
        List<string?> filters = [];
        var cut = Render(ctx, [], filters);

        var rows = cut.FindAll("[data-testid='tag-row']");
        Assert.Equal(["a cat", "red", "sks"], rows.Select(r => r.GetAttribute("data-tag")));
        Assert.Equal("2", rows[0].QuerySelectorAll("td")[1].TextContent.Trim());
        await rows[1].ClickAsync(new());
        Assert.Equal(["red"], filters);

        var filtered = Render(ctx, [], filters, filter: "red");
        await filtered.Find("[data-testid='tag-row'][data-tag='red']").ClickAsync(new());
        Assert.Equal(["red", null], filters);
    }
}
