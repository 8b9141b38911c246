using System.Net;
using System.Net.Http.Headers;
using Microsoft.Extensions.DependencyInjection;
using SdAppliance.Appliance.Storage;
using SdAppliance.Imaging;

namespace SdAppliance.Web.Tests.Ui;

/// <summary>The gallery's thumbnails: small JPEGs of the caller's own outputs, nobody else's.</summary>
public sealed class OutputThumbnailTests
{
    [Fact]
    public async Task An_outputs_thumbnail_is_a_small_jpeg_for_its_owner_and_not_found_for_another_user()
    {
        await using var factory = new ApplianceFactory();
        var owner = await factory.CreateUserAsync();
        var other = await factory.CreateUserAsync();
        var output = await factory.Services.GetRequiredService<OutputService>().SaveAsync(owner.Id, new RgbImage(1024, 512, 3), 5, CancellationToken.None);

        using var client = factory.CreateClient();
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", await factory.CreateTokenAsync(owner.Id));
        using var response = await client.GetAsync(new Uri($"/ui/outputs/thumbnails/{output.Path}?size=128", UriKind.Relative));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("image/jpeg", response.Content.Headers.ContentType?.MediaType);
        var thumbnail = ImageCodec.Identify(await response.Content.ReadAsByteArrayAsync());
        Assert.Equal((128, 64), (thumbnail.Width, thumbnail.Height));

        using var bad = await client.GetAsync(new Uri($"/ui/outputs/thumbnails/{output.Path}?size=100", UriKind.Relative));
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);

        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", await factory.CreateTokenAsync(other.Id));
        using var hidden = await client.GetAsync(new Uri($"/ui/outputs/thumbnails/{output.Path}?size=128", UriKind.Relative));
        Assert.Equal(HttpStatusCode.NotFound, hidden.StatusCode);
    }
}
