using Bunit;
using Microsoft.Extensions.DependencyInjection;
using MudBlazor.Services;
using SdAppliance.Appliance.Runs;
using SdAppliance.Web.Components.Pages.Runs;

namespace SdAppliance.Web.Tests.Ui;

/// <summary>The grid picker hands the chosen checkpoints and prompts on, and refuses an empty choice at the field.</summary>
public sealed class CheckpointGridPickerTests
{
    private static readonly RunLora[] Loras = [new("r-step-000010.safetensors", 10), new("r-step-000020.safetensors", 20), new("r.safetensors", null)];

    /// <summary>The checkbox of a checkpoint (MudCheckBox puts the test id on its input or around it).</summary>
    private static AngleSharp.Dom.IElement Checkbox(IRenderedComponent<CheckpointGridPicker> cut, string testId) =>
        cut.Find($"input[data-testid='{testId}'], [data-testid='{testId}'] input");

    [Fact]
    public async Task It_generates_the_chosen_checkpoints_with_the_prompts_given_one_a_line()
    {
        await using var ctx = new BunitContext();
        ctx.JSInterop.Mode = JSRuntimeMode.Loose;
        ctx.Services.AddMudServices();
        GridSelection? generated = null;
        var cut = ctx.Render<CheckpointGridPicker>(p => p
            .Add(c => c.Checkpoints, Loras)
            .Add(c => c.DefaultPrompts, ["a red square"])
            .Add(c => c.OnGenerate, (GridSelection s) => generated = s));

        var button = () => cut.Find("[data-testid=grid-generate]");
        Assert.True(button().HasAttribute("disabled"));
        Assert.Equal(3, cut.FindAll("input[type=checkbox]").Count);

        Checkbox(cut, "grid-checkpoint-r.safetensors").Change(true);
        Checkbox(cut, "grid-checkpoint-r-step-000010.safetensors").Change(true);
        cut.Find("textarea[data-testid=grid-prompts], [data-testid=grid-prompts] textarea").Change("a red square\n\n a blue circle ");
        Assert.False(button().HasAttribute("disabled"));
        Assert.Contains("2 × 2 grid", button().TextContent, StringComparison.Ordinal);
        button().Click();

        Assert.NotNull(generated);
        // In the run's order (steps first, the final one last), blank lines left out.
        Assert.Equal(["r-step-000010.safetensors", "r.safetensors"], generated.Checkpoints);
        Assert.Equal(["a red square", "a blue circle"], generated.UsedPrompts);
        Assert.Equal(1234, generated.Seed);
    }

    [Fact]
    public async Task Unticking_every_checkpoint_or_clearing_the_prompts_names_the_problem_and_disables_generating()
    {
        await using var ctx = new BunitContext();
        ctx.JSInterop.Mode = JSRuntimeMode.Loose;
        ctx.Services.AddMudServices();
        var cut = ctx.Render<CheckpointGridPicker>(p => p.Add(c => c.Checkpoints, Loras).Add(c => c.DefaultPrompts, ["a red square"]));
        var checkbox = () => Checkbox(cut, "grid-checkpoint-r.safetensors");
        checkbox().Change(true);
        checkbox().Change(false);
        Assert.Equal("choose at least one checkpoint", cut.Find("[data-testid=grid-checkpoints-error]").TextContent);
        checkbox().Change(true);
        cut.Find("textarea[data-testid=grid-prompts], [data-testid=grid-prompts] textarea").Change("  ");
        Assert.Contains("give at least one prompt, one a line", cut.Find(".mud-input-helper-text.mud-input-error").TextContent, StringComparison.Ordinal);
        Assert.True(cut.Find("[data-testid=grid-generate]").HasAttribute("disabled"));
    }
}
