using System.Security.Claims;
using Bunit;
using Microsoft.AspNetCore.Components.Forms;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using MudBlazor.Services;
using SdAppliance.Appliance;
using SdAppliance.Appliance.Persistence;
using SdAppliance.Appliance.Storage;
using SdAppliance.Web.Components;
using SdAppliance.Web.Components.Pages.Models;

namespace SdAppliance.Web.Tests.Ui;

/// <summary>The Models page over the appliance's real services (a temporary data folder): what it lists, and refusals shown at their field.</summary>
public sealed class ModelsPageComponentTests : IDisposable
{
    private readonly string root = Directory.CreateTempSubdirectory("sdapp-models-ui-").FullName;

    private async Task<BunitContext> ContextAsync()
    {
        var ctx = new BunitContext();
        ctx.JSInterop.Mode = JSRuntimeMode.Loose;
        ctx.Services.AddMudServices();
        ctx.Services.AddAppliance(new ApplianceOptions
        {
            DataFolder = Path.Combine(root, "data"),
            ApplicationRoot = DataFolder.FindApplicationRoot(),
            ImportRoots = [Directory.CreateDirectory(Path.Combine(root, "import")).FullName],
        });
        ctx.Services.AddScoped<SignedInUser>();
        ctx.Services.AddSingleton<AntiforgeryStateProvider>(new NoAntiforgery());
        var auth = ctx.AddAuthorization();
        auth.SetAuthorized("alice");
        auth.SetClaims(new Claim(ClaimTypes.NameIdentifier, "alice-id"));
        await using var db = await ctx.Services.GetRequiredService<IDbContextFactory<ApplianceDb>>().CreateDbContextAsync();
        await db.Database.MigrateAsync();
        return ctx;
    }

    [Fact]
    public async Task A_server_path_outside_the_import_roots_is_refused_at_the_field_and_an_allowed_one_is_imported_and_listed()
    {
        await using var ctx = await ContextAsync();
        var cut = ctx.Render<ModelsPage>();
        cut.WaitForAssertion(() => Assert.Single(cut.FindAll("[data-testid=model-row][data-name=demo]")));

        ServerPath(cut).Input("/etc/passwd");
        cut.Find("[data-testid=server-import]").Click();
        cut.WaitForAssertion(() => Assert.Contains("'/etc/passwd'", cut.Find(".mud-input-helper-text").TextContent, StringComparison.Ordinal));
        Assert.Empty(cut.FindAll("[data-name='passwd']"));

        var allowed = Path.Combine(root, "import", "tiny.safetensors");
        File.Copy(Path.Combine(DataFolder.FindApplicationRoot()!, "models", "demo", "demo.safetensors"), allowed);
        ServerPath(cut).Input(allowed);
        cut.Find("[data-testid=server-import]").Click();
        cut.WaitForAssertion(() => Assert.Single(cut.FindAll("[data-testid=model-row][data-name='tiny.safetensors']")), TimeSpan.FromSeconds(20));
        Assert.Empty(cut.FindAll(".mud-input-error"));
        // The imported model is selected: its details show its family and SHA-256.
        Assert.Equal("SD 1.x", cut.Find("[data-testid=detail-family]").TextContent);
        Assert.Equal(64, cut.Find("[data-testid=detail-sha256]").TextContent.Trim().Length);
    }

    [Fact]
    public async Task A_LoRAs_kohya_metadata_is_shown_in_its_details_and_it_offers_no_export()
    {
        await using var ctx = await ContextAsync();
        var lora = Path.Combine(root, "data", "models", "lora", "ink.safetensors");
        Directory.CreateDirectory(Path.GetDirectoryName(lora)!);
        var zeros = new byte[2 * 4 * 4];
        Formats.SafetensorsFile.Write(lora,
        [
            new Formats.SafetensorsTensor("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", Formats.SafetensorsDType.F32, [2, 4], zeros),
            new Formats.SafetensorsTensor("lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight", Formats.SafetensorsDType.F32, [4, 2], zeros),
        ], new Dictionary<string, string> { ["ss_network_dim"] = "2", ["ss_output_name"] = "ink", ["modelspec.title"] = "Ink" });

        var cut = ctx.Render<ModelsPage>();
        cut.WaitForAssertion(() => Assert.Contains(cut.FindAll(".mud-tab"), t => t.TextContent.Contains("LoRAs (1)", StringComparison.Ordinal)));
        cut.FindAll(".mud-tab").First(t => t.TextContent.Contains("LoRAs", StringComparison.Ordinal)).Click();
        cut.WaitForAssertion(() => Assert.Single(cut.FindAll("[data-testid=model-row][data-name='ink.safetensors']")));
        cut.Find("[data-testid=model-row][data-name='ink.safetensors']").Click();
        var rows = cut.FindAll("[data-testid=model-metadata] tr").Select(r => r.TextContent).ToList();
        // kohya's ss_* fields first, then the rest.
        Assert.Equal(["ss_network_dim2", "ss_output_nameink", "modelspec.titleInk"], rows);
        Assert.Empty(cut.FindAll("[data-testid^=export-]"));
    }

    [Fact]
    public async Task A_base_model_offers_the_ONNX_export_which_is_queued_as_a_job_that_is_no_download()
    {
        await using var ctx = await ContextAsync();
        var cut = ctx.Render<ModelsPage>();
        cut.WaitForAssertion(() => Assert.Single(cut.FindAll("[data-testid=model-row][data-name=demo]")));
        cut.Find("[data-testid=model-row][data-name=demo]").Click();

        Assert.Single(cut.FindAll("[data-testid=onnx-layout]"));
        cut.Find("[data-testid=export-onnx]").Click();

        cut.WaitForAssertion(() => Assert.Contains("onnx", cut.Find("[data-testid=export-job]").TextContent, StringComparison.Ordinal));
        Assert.Empty(cut.FindAll("[data-testid=export-error]"));
        Assert.Empty(cut.FindAll("[data-testid=export-download]"));
    }

    // MudTextField puts the attribute on its input or its wrapper, by version.
    private static AngleSharp.Dom.IElement ServerPath(IRenderedComponent<ModelsPage> cut)
    {
        var element = cut.Find("[data-testid=server-path]");
        return element.TagName == "INPUT" ? element : element.QuerySelector("input")!;
    }

    public void Dispose()
    {
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Directory.Delete(root, recursive: true);
    }

    private sealed class NoAntiforgery : AntiforgeryStateProvider
    {
        public override AntiforgeryRequestToken? GetAntiforgeryToken() => null;
    }
}
