using System.Text;
using System.Text.RegularExpressions;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Playwright;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Storage;
using SdAppliance.Imaging;

namespace SdAppliance.Web.Tests.EndToEnd;

/// <summary>The Train page in a real browser: pick LoRA, the demo model and a dataset, see the steps, get a refusal at its field, start.</summary>
public sealed partial class TrainPageEndToEndTests
{
    [Fact]
    public async Task A_LoRA_run_on_the_demo_model_is_planned_refused_at_its_field_then_started_and_opened()
    {
        using var appliance = new LiveAppliance();
        var user = await appliance.CreateUserAsync();
        await MakeDatasetAsync(appliance, user, "inkcats", images: 3);
        await using var browser = await Browser.LaunchAsync();
        await using var session = await browser.NewPageAsync(appliance.Address);
        var page = session.Page;

        await session.SignInAsync(user);
        await session.GoToAsync("/train");

        await page.GetByText("LoRA / LoCon", new() { Exact = true }).ClickAsync();
        await PickAsync(page, "model-picker", "demo");
        await PickAsync(page, "dataset-picker", "inkcats (3 images)");
        // 3 images at batch 1 for the LoRA preset's 1000 steps: 3 batches an epoch, 334 epochs.
        await Assertions.Expect(page.GetByTestId("plan-steps")).ToHaveTextAsync("1000");
        await Assertions.Expect(page.GetByTestId("plan-images")).ToHaveTextAsync("3");
        await Assertions.Expect(page.GetByTestId("plan-epochs")).ToHaveTextAsync("334");
        await Assertions.Expect(page.GetByTestId("plan-time")).ToHaveTextAsync("unknown");

        await SetAsync(page, "network_dim", "0");
        await page.GetByTestId("start").ClickAsync();
        var field = page.GetByTestId("field-network_dim");
        await Assertions.Expect(field.Locator(".mud-input-helper-text")).ToContainTextAsync("must be at least 1 (the LoRA rank)");
        Assert.Equal("/train", new Uri(page.Url).AbsolutePath);
        await page.EvaluateAsync("window.scrollTo(0, 0)");
        await session.ScreenshotAsync("train");

        await SetAsync(page, "network_dim", "4");
        await SetAsync(page, "resolution", "64");
        await SetAsync(page, "max_train_steps", "2");
        await Assertions.Expect(page.GetByTestId("plan-steps")).ToHaveTextAsync("2");
        await page.GetByTestId("start").ClickAsync();
        await Assertions.Expect(page).ToHaveURLAsync(RunPage());  // a navigation inside the circuit: no load event

        var id = Guid.Parse(RunPage().Match(page.Url).Groups[1].Value);
        var job = await appliance.Services.GetRequiredService<JobService>().GetAsync(new Caller(user.Id, false), id, CancellationToken.None);
        Assert.NotNull(job);
        Assert.Equal(JobKind.Training, job.Kind);
        Assert.Equal("datasets/inkcats", job.Request.GetProperty("data").GetString());
        Assert.Equal(4, job.Request.GetProperty("network_dim").GetInt32());
        Assert.False(job.Request.TryGetProperty("model", out _));  // the demo model: the job's default
        await session.AssertNoErrorsAsync();
    }

    [GeneratedRegex("/runs/([0-9a-f-]{36})$")]
    private static partial Regex RunPage();

    /// <summary>Opens the MudSelect in <paramref name="picker"/> and clicks the item holding <paramref name="text"/>.</summary>
    private static async Task PickAsync(IPage page, string picker, string text)
    {
        await page.GetByTestId(picker).Locator(".mud-select .mud-input").First.ClickAsync();
        await page.Locator(".mud-popover-open .mud-list-item").Filter(new() { HasText = text }).First.ClickAsync();
        await Assertions.Expect(page.Locator(".mud-popover-open .mud-list-item")).ToHaveCountAsync(0);
    }

    /// <summary>Types into a setting and leaves it, as a user does (the value reaches the server on change).</summary>
    private static async Task SetAsync(IPage page, string setting, string text)
    {
        var input = page.GetByTestId($"field-{setting}").Locator("input");
        await input.FillAsync(text);
        await input.PressAsync("Tab");
    }

    private static async Task MakeDatasetAsync(LiveAppliance appliance, TestUser user, string name, int images)
    {
        var datasets = appliance.Services.GetRequiredService<DatasetService>();
        var caller = new Caller(user.Id, IsAdmin: false);
        await datasets.CreateAsync(caller, name, isPrivate: false, CancellationToken.None);
        await datasets.AddImagesAsync(caller, name, null, Uploads(images), CancellationToken.None);
    }

    private static async IAsyncEnumerable<DatasetUpload> Uploads(int count)
    {
        await Task.Yield();
        for (var i = 0; i < count; i++)
        {
            var image = new RgbImage(64, 64, 3);
            for (var x = 0; x < 64; x++) image.Pixel(x, 8 * i)[0] = 255;
            yield return new DatasetUpload($"cat{i}.png", new MemoryStream(ImageCodec.Encode(image)));
            yield return new DatasetUpload($"cat{i}.txt", new MemoryStream(Encoding.UTF8.GetBytes("an ink drawing of a cat")));
        }
    }
}
