using System.Net;
using System.Net.Http.Json;
using System.Text.Json;

namespace SdAppliance.Web.Tests;

/// <summary>The status page at <c>/</c>, the OpenAPI document and the browsable reference: there for a user, refused to anyone else.</summary>
public sealed class ApiReferenceTests : IDisposable
{
    private readonly ApplianceFactory factory = new();

    public void Dispose() => factory.Dispose();

    [Fact]
    public async Task The_OpenAPI_document_describes_the_REST_routes()
    {
        using var client = factory.CreateSignedInClient();
        var document = await client.GetFromJsonAsync<JsonElement>("/openapi/v1.json");

        var paths = document.GetProperty("paths").EnumerateObject().Select(p => p.Name).ToList();
        Assert.Contains("/api/v1/jobs", paths);
        Assert.Contains("/api/v1/jobs/generation", paths);
        Assert.Contains("/api/v1/jobs/{id}/events", paths);
        Assert.Contains("/api/v1/runs/{id}/results/{name}", paths);
    }

    [Fact]
    public async Task The_browsable_reference_is_served()
    {
        using var client = factory.CreateSignedInClient();
        var response = await client.GetAsync("/scalar/");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/html", response.Content.Headers.ContentType?.MediaType);
    }

    [Theory]
    [InlineData("/openapi/v1.json")]
    [InlineData("/scalar/")]
    [InlineData("/api/v1/jobs")]
    public async Task Without_credentials_the_reference_and_the_API_are_refused(string url)
    {
        await factory.CreateUserAsync(admin: true);  // set up: past the first-run redirect to /setup
        using var client = factory.CreateClient(new() { AllowAutoRedirect = false });
        var response = await client.GetAsync(url);

        Assert.True(response.StatusCode is HttpStatusCode.Unauthorized or HttpStatusCode.Redirect, $"{url}: {(int)response.StatusCode}");
        Assert.DoesNotContain("/api/v1/jobs", await response.Content.ReadAsStringAsync());
    }
}
