using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using Microsoft.Extensions.DependencyInjection;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Storage;
using SdAppliance.Imaging;

namespace SdAppliance.Web.Tests.Ui;

/// <summary>The dataset page's own endpoints: the upload needs the page's antiforgery token; thumbnails are JPEGs of what the caller may see.</summary>
public sealed class DatasetFileEndpointsTests
{
    private static byte[] Png(int width, int height) => ImageCodec.Encode(new RgbImage(width, height, 3), ImageEncodeOptions.Png);

    [Fact]
    public async Task An_upload_without_the_antiforgery_token_is_refused_and_adds_nothing()
    {
        await using var factory = new ApplianceFactory();
        var user = await factory.CreateUserAsync();
        var token = await factory.CreateTokenAsync(user.Id);
        var caller = new Caller(user.Id, false);
        var datasets = factory.Services.GetRequiredService<DatasetService>();
        await datasets.CreateAsync(caller, "cats", false, CancellationToken.None);
        using var client = factory.CreateClient();
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);

        using var form = new MultipartFormDataContent { { new ByteArrayContent(Png(64, 64)), "file", "a.png" } };
        using var response = await client.PostAsync(new Uri("/ui/datasets/cats/files", UriKind.Relative), form);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("antiforgery", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.Empty((await datasets.ListImagesAsync(caller, "cats", CancellationToken.None))!);
    }

    [Fact]
    public async Task Thumbnails_are_small_jpegs_and_private_datasets_stay_hidden()
    {
        await using var factory = new ApplianceFactory();
        var owner = await factory.CreateUserAsync();
        var other = await factory.CreateUserAsync();
        var datasets = factory.Services.GetRequiredService<DatasetService>();
        var caller = new Caller(owner.Id, false);
        await datasets.CreateAsync(caller, "mine", isPrivate: true, CancellationToken.None);
        await datasets.AddImagesAsync(caller, "mine", "5_cat", One("a.png", Png(600, 300)), CancellationToken.None);

        using var client = factory.CreateClient();
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", await factory.CreateTokenAsync(owner.Id));
        var bytes = await client.GetByteArrayAsync(new Uri("/ui/datasets/mine/thumbnails/5_cat/a.png?size=256", UriKind.Relative));
        var info = ImageCodec.Identify(bytes);
        Assert.Equal((ImageFormat.Jpeg, 256, 128), (info.Format, info.Width, info.Height));

        using var stranger = factory.CreateClient();
        stranger.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", await factory.CreateTokenAsync(other.Id));
        using var hidden = await stranger.GetAsync(new Uri("/ui/datasets/mine/thumbnails/5_cat/a.png?size=256", UriKind.Relative));
        Assert.Equal(HttpStatusCode.NotFound, hidden.StatusCode);
        using var badSize = await client.GetAsync(new Uri("/ui/datasets/mine/thumbnails/5_cat/a.png?size=9999", UriKind.Relative));
        Assert.Equal(HttpStatusCode.BadRequest, badSize.StatusCode);
        Assert.Contains("size", (await badSize.Content.ReadFromJsonAsync<Dictionary<string, object>>())!["field"].ToString(), StringComparison.Ordinal);
    }

    private static async IAsyncEnumerable<DatasetUpload> One(string name, byte[] bytes)
    {
        await Task.Yield();
        yield return new DatasetUpload(name, new MemoryStream(bytes));
    }
}
