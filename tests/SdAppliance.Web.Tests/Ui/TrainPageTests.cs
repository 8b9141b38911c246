using System.Security.Claims;
using System.Text;
using Bunit;
using Microsoft.AspNetCore.Components;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using MudBlazor.Services;
using SdAppliance.Appliance;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Persistence;
using SdAppliance.Appliance.Storage;
using SdAppliance.Imaging;
using SdAppliance.Web.Components;
using TrainPage = SdAppliance.Web.Components.Pages.Train.Train;

namespace SdAppliance.Web.Tests.Ui;

/// <summary>
/// The Train page over the appliance's own services (a fresh data folder, the repository's demo model): the server's
/// refusal of a setting is shown at that setting's field, and a run that can start is queued and opened.
/// </summary>
public sealed class TrainPageTests : IAsyncDisposable
{
    private const string UserId = "alice-id";
    private readonly string data = Directory.CreateTempSubdirectory("sdapp-train-ui-").FullName;
    private readonly BunitContext ctx = new();

    public TrainPageTests()
    {
        ctx.JSInterop.Mode = JSRuntimeMode.Loose;
        ctx.Services.AddMudServices();
        ctx.Services.AddAppliance(new ApplianceOptions { DataFolder = data, ApplicationRoot = DataFolder.FindApplicationRoot(), Devices = ["cpu"] });
        ctx.Services.AddScoped<SignedInUser>();
        var auth = ctx.AddAuthorization();
        auth.SetAuthorized("alice");
        auth.SetClaims(new Claim(ClaimTypes.NameIdentifier, UserId));
    }

    private async Task<IRenderedComponent<TrainPage>> OpenWithDatasetAsync()
    {
        await DatabaseMigration.MigrateAsync(ctx.Services, CancellationToken.None);
        var datasets = ctx.Services.GetRequiredService<DatasetService>();
        var caller = new Caller(UserId, IsAdmin: false);
        await datasets.CreateAsync(caller, "ink", isPrivate: false, CancellationToken.None);
        await datasets.AddImagesAsync(caller, "ink", null, Uploads(3), CancellationToken.None);
        ctx.Services.GetRequiredService<NavigationManager>().NavigateTo("/train?dataset=ink");
        var page = ctx.Render<TrainPage>();
        // 3 images, the LoRA preset's 1000 steps at batch 1: 334 epochs of 3 batches.
        page.WaitForAssertion(() => Assert.Equal("1000", page.Find("[data-testid=plan-steps]").TextContent.Trim()), TimeSpan.FromSeconds(20));
        Assert.Equal("3", page.Find("[data-testid=plan-images]").TextContent.Trim());
        Assert.Equal("334", page.Find("[data-testid=plan-epochs]").TextContent.Trim());
        return page;
    }

    [Fact]
    public async Task A_setting_the_training_layer_refuses_shows_its_message_at_that_field_and_nothing_starts()
    {
        var page = await OpenWithDatasetAsync();

        page.Find("[data-testid=field-network_dim] input").Change("0");
        page.Find("button[data-testid=start]").Click();

        page.WaitForAssertion(() => Assert.Contains("must be at least 1 (the LoRA rank)",
            page.Find("[data-testid=field-network_dim] .mud-input-helper-text").TextContent, StringComparison.Ordinal), TimeSpan.FromSeconds(10));
        OnlyAt(page, "network_dim");
        Assert.Contains("network_dim", page.Find("[data-testid=start-error]").TextContent, StringComparison.Ordinal);
        Assert.EndsWith("/train?dataset=ink", ctx.Services.GetRequiredService<NavigationManager>().Uri, StringComparison.Ordinal);
        Assert.Empty(await ctx.Services.GetRequiredService<JobService>().ListAsync(new Caller(UserId, false), null, CancellationToken.None));

        // Changing the field clears its message; a value the layer takes starts the run and opens its page.
        page.Find("[data-testid=field-network_dim] input").Change("8");
        page.WaitForAssertion(() => Assert.Empty(page.FindAll(".mud-input-error")));
        Assert.Empty(page.FindAll("[data-testid=start-error]"));
        page.Find("button[data-testid=start]").Click();
        page.WaitForAssertion(() => Assert.Matches("/runs/[0-9a-f-]{36}$", ctx.Services.GetRequiredService<NavigationManager>().Uri), TimeSpan.FromSeconds(10));
        var job = Assert.Single(await ctx.Services.GetRequiredService<JobService>().ListAsync(new Caller(UserId, false), null, CancellationToken.None));
        Assert.Equal(8, job.Request.GetProperty("network_dim").GetInt32());
        Assert.Equal("datasets/ink", job.Request.GetProperty("data").GetString());
    }

    [Fact]
    public async Task A_value_that_is_not_a_number_is_refused_at_its_field_and_the_plan_says_why_it_cannot_count()
    {
        var page = await OpenWithDatasetAsync();

        page.Find("[data-testid=field-max_train_steps] input").Change("lots");
        page.WaitForAssertion(() => Assert.Contains("max_train_steps", page.Find("[data-testid=plan-missing]").TextContent, StringComparison.Ordinal));
        page.Find("button[data-testid=start]").Click();

        page.WaitForAssertion(() => Assert.Contains("'lots' is not a valid int32",
            page.Find("[data-testid=field-max_train_steps] .mud-input-helper-text").TextContent, StringComparison.Ordinal), TimeSpan.FromSeconds(10));
        OnlyAt(page, "max_train_steps");
    }

    [Fact]
    public async Task Starting_without_a_dataset_shows_the_training_layers_message_at_the_dataset_picker()
    {
        await DatabaseMigration.MigrateAsync(ctx.Services, CancellationToken.None);
        var page = ctx.Render<TrainPage>();
        page.WaitForAssertion(() => Assert.Contains("Choose a dataset", page.Find("[data-testid=plan-missing]").TextContent, StringComparison.Ordinal));

        page.Find("button[data-testid=start]").Click();

        page.WaitForAssertion(() => Assert.Contains("give the image folder",
            page.Find("[data-testid=dataset-picker] .mud-input-helper-text").TextContent, StringComparison.Ordinal), TimeSpan.FromSeconds(10));
        Assert.All(page.FindAll(".mud-input-error"), e => Assert.NotNull(e.Closest("[data-testid=dataset-picker]")));
    }

    [Fact]
    public async Task A_refused_advanced_setting_opens_the_advanced_settings_to_show_its_message_there()
    {
        var page = await OpenWithDatasetAsync();
        page.Find("[data-testid=advanced] .mud-expand-panel-header").Click();
        page.Find("[data-testid=field-save_last_k] input").Change("0");
        page.Find("[data-testid=advanced] .mud-expand-panel-header").Click();  // closed again: the field is out of sight
        page.WaitForAssertion(() => Assert.False(page.Find("[data-testid=advanced]").ClassList.Contains("mud-panel-expanded")));

        page.Find("button[data-testid=start]").Click();

        page.WaitForAssertion(() => Assert.Contains("must be at least 1",
            page.Find("[data-testid=field-save_last_k] .mud-input-helper-text").TextContent, StringComparison.Ordinal), TimeSpan.FromSeconds(10));
        OnlyAt(page, "save_last_k");
        Assert.True(page.Find("[data-testid=advanced]").ClassList.Contains("mud-panel-expanded"));
    }

    /// <summary>Errors are shown at <paramref name="field"/> and at no other field.</summary>
    private static void OnlyAt(IRenderedComponent<TrainPage> page, string field)
    {
        var shown = page.FindAll(".mud-input-error");
        Assert.NotEmpty(shown);
        Assert.All(shown, e => Assert.Equal($"field-{field}", e.Closest("[data-testid^=field-]")?.GetAttribute("data-testid")));
    }

    private static async IAsyncEnumerable<DatasetUpload> Uploads(int count)
    {
        await Task.Yield();
        for (var i = 0; i < count; i++)
        {
            var image = new RgbImage(64, 64, 3);
            image.Pixel(i, i)[1] = 200;
            yield return new DatasetUpload($"img{i}.png", new MemoryStream(ImageCodec.Encode(image)));
            yield return new DatasetUpload($"img{i}.txt", new MemoryStream(Encoding.UTF8.GetBytes("an ink drawing")));
        }
    }

    public async ValueTask DisposeAsync()
    {
        await ctx.DisposeAsync();
        SqliteConnection.ClearAllPools();
        Directory.Delete(data, recursive: true);
    }
}
