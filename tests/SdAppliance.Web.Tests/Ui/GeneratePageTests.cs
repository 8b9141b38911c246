using Bunit;
using Microsoft.Extensions.DependencyInjection;
using MudBlazor.Services;
using SdAppliance.Appliance.Catalog;
using SdAppliance.Appliance.Generation;
using SdAppliance.Web.Components.Pages.Generate;

namespace SdAppliance.Web.Tests.Ui;

/// <summary>The Generate page's components with logic: the network pickers' insert and the gallery's "send to the form".</summary>
public sealed class GeneratePageTests
{
    private static BunitContext Context()
    {
        var ctx = new BunitContext();
        ctx.Services.AddMudServices();
        ctx.JSInterop.Mode = JSRuntimeMode.Loose;
        return ctx;
    }

    private static ModelEntry Network(ModelKind kind, string name) =>
        new(kind, name, name, name + ".safetensors", "/models/" + name + ".safetensors", 1, DateTime.UtcNow, null, null, null, null,
            new Dictionary<string, string>(), null, null, null, false, false);

    [Fact]
    public async Task A_lora_chip_inserts_its_tag_at_the_chosen_weight_and_a_second_click_changes_the_weight()
    {
        await using var ctx = Context();
        var prompt = "a red circle";
        var cut = ctx.Render<NetworkPicker>(p => p
            .Add(x => x.Kind, ModelKind.Lora)
            .Add(x => x.Items, [Network(ModelKind.Lora, "shapes"), Network(ModelKind.Lora, "ink")])
            .Add(x => x.Prompt, prompt)
            .Add(x => x.PromptChanged, v => prompt = v));

        cut.Find("[data-testid='insert-lora-shapes']").Click();
        Assert.Equal("a red circle <lora:shapes:1>", prompt);

        cut.Render(p => p.Add(x => x.Prompt, prompt));
        cut.Find("input[data-testid='picker-lora-weight']").Change("0.6");
        cut.Find("[data-testid='insert-lora-shapes']").Click();
        Assert.Equal("a red circle <lora:shapes:0.6>", prompt);

        cut.Render(p => p.Add(x => x.Prompt, prompt));
        cut.Find("[data-testid='insert-lora-ink']").Click();
        Assert.Equal("a red circle <lora:shapes:0.6> <lora:ink:0.6>", prompt);
    }

    [Fact]
    public async Task Micro_conditioning_is_typed_height_first_and_a_bad_pair_is_refused_in_place_keeping_the_request()
    {
        await using var ctx = Context();
        var request = new GenerationJobRequest { Prompt = "a fox", TargetSize = [768, 1024] };
        var cut = ctx.Render<MicroConditioningFields>(p => p.Add(x => x.Request, request).Add(x => x.RequestChanged, r => request = r));
        // A value the request holds is shown in the order it is typed.
        Assert.Equal("768,1024", cut.Find("input[data-testid='target-size']").GetAttribute("value"));

        cut.Find("input[data-testid='original-size']").Change("1024, 768");
        Assert.Equal([1024, 768], request.OriginalSize);
        cut.Render(p => p.Add(x => x.Request, request));
        cut.Find("input[data-testid='negative-crops-coords-top-left']").Change("64,32");
        Assert.Equal([64, 32], request.NegativeCropsCoordsTopLeft);

        cut.Render(p => p.Add(x => x.Request, request));
        cut.Find("input[data-testid='crops-coords-top-left']").Change("64,left");
        Assert.Null(request.CropsCoordsTopLeft);
        Assert.Contains("'64,left': expected TOP,LEFT", cut.Markup);
        Assert.Equal("64,left", cut.Find("input[data-testid='crops-coords-top-left']").GetAttribute("value"));

        // Emptied: diffusers' default again.
        cut.Find("input[data-testid='original-size']").Change("");
        Assert.Null(request.OriginalSize);
    }

    [Fact]
    public async Task An_embedding_chip_inserts_its_token_without_a_weight()
    {
        await using var ctx = Context();
        var prompt = "";
        var cut = ctx.Render<NetworkPicker>(p => p
            .Add(x => x.Kind, ModelKind.Embedding)
            .Add(x => x.Items, [Network(ModelKind.Embedding, "sks-star")])
            .Add(x => x.PromptChanged, v => prompt = v));
        Assert.Empty(cut.FindAll("[data-testid='picker-embedding-weight']"));
        cut.Find("[data-testid='insert-embedding-sks-star']").Click();
        Assert.Equal("sks-star", prompt);
    }

    [Fact]
    public async Task Send_to_the_form_gives_the_request_the_png_info_describes_and_names_what_it_could_not_read()
    {
        await using var ctx = Context();
        GenerationJobRequest? sent = null;
        const string text = "a red circle <lora:shapes:0.8>\nNegative prompt: blurry\n"
            + "Steps: 9, Sampler: Euler a, CFG scale: 5.5, Seed: 77, Size: 64x64, Model: demo, Clip skip: two, Version: SdAppliance";
        var cut = ctx.Render<PngInfoPanel>(p => p.Add(x => x.Infotext, text).Add(x => x.OnSend, r => sent = r));
        Assert.Contains("Seed: 77", cut.Find("[data-testid='png-info-text']").TextContent, StringComparison.Ordinal);

        cut.Find("[data-testid='send-to-form']").Click();
        Assert.NotNull(sent);
        Assert.Equal(("a red circle <lora:shapes:0.8>", "blurry", 9, "Euler a", 5.5, 77L, 64, 64, "demo"),
            (sent.Prompt, sent.NegativePrompt, sent.Steps, sent.Sampler, sent.CfgScale, sent.Seed, sent.Width, sent.Height, sent.Model));
        Assert.Equal(new GenerationJobRequest().ClipSkip, sent.ClipSkip);
        Assert.Contains("Clip skip: 'two' is not a whole number", cut.Find("[data-testid='png-info-problems']").TextContent, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_image_without_parameters_offers_nothing_to_send()
    {
        await using var ctx = Context();
        var cut = ctx.Render<PngInfoPanel>(p => p.Add(x => x.Infotext, ""));
        Assert.Empty(cut.FindAll("[data-testid='send-to-form']"));
        Assert.Contains("no generation parameters", cut.Markup, StringComparison.Ordinal);
    }
}
