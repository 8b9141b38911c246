using System.Net;
using System.Net.Http.Json;
using System.Net.ServerSentEvents;
using System.Text.Json;

namespace SdAppliance.Web.Tests;

/// <summary>
/// Who may do what with a job: its owner and an admin see and cancel it; another user gets a 404, the same answer as for a
/// job that does not exist, so not even its existence leaks.
/// </summary>
public sealed class JobRolesTests : IDisposable
{
    private readonly ApplianceFactory factory = new();

    // A bound so that a job that never ends fails the test instead of hanging the suite; not a speed check.
    private readonly CancellationTokenSource bound = new(TimeSpan.FromMinutes(5));

    public void Dispose()
    {
        bound.Dispose();
        factory.Dispose();
    }

    [Fact]
    public async Task Another_user_cannot_see_or_cancel_a_job_and_an_admin_can()
    {
        using var owner = factory.CreateSignedInClient();
        using var other = factory.CreateSignedInClient();
        using var admin = factory.CreateSignedInClient(admin: true);
        // Long enough to be still queued or running when it is cancelled; the admin's cancel ends it.
        var submitted = await owner.PostAsJsonAsync("/api/v1/jobs/generation", new { prompt = "a red circle", steps = 5000, seed = 1 }, bound.Token);
        Assert.Equal(HttpStatusCode.Created, submitted.StatusCode);
        var id = (await submitted.Content.ReadFromJsonAsync<JsonElement>(bound.Token)).GetProperty("id").GetString()!;
        var missing = Guid.NewGuid().ToString();

        foreach (var (method, url) in Routes(id))
        {
            var refused = await other.SendAsync(new HttpRequestMessage(method, url), bound.Token);
            var absent = await other.SendAsync(new HttpRequestMessage(method, url.Replace(id, missing, StringComparison.Ordinal)), bound.Token);
            Assert.True(refused.StatusCode == HttpStatusCode.NotFound, $"{method} {url}: {(int)refused.StatusCode}");
            Assert.Equal(absent.StatusCode, refused.StatusCode);
            Assert.Equal(await ProblemAsync(absent, missing), await ProblemAsync(refused, id));
        }
        Assert.DoesNotContain(id, await other.GetStringAsync("/api/v1/jobs", bound.Token));

        Assert.Equal(HttpStatusCode.OK, (await owner.GetAsync($"/api/v1/jobs/{id}", bound.Token)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await admin.GetAsync($"/api/v1/jobs/{id}", bound.Token)).StatusCode);
        Assert.Contains(id, await admin.GetStringAsync("/api/v1/jobs", bound.Token));

        var cancel = await admin.PostAsync($"/api/v1/jobs/{id}/cancel", null, bound.Token);
        Assert.Equal(HttpStatusCode.OK, cancel.StatusCode);

        // The owner's event stream ends with the cancellation the admin made.
        await using var stream = await owner.GetStreamAsync($"/api/v1/jobs/{id}/events", bound.Token);
        var last = default(SseItem<string>);
        await foreach (var item in SseParser.Create(stream).EnumerateAsync(bound.Token)) last = item;
        Assert.Equal("state", last.EventType);
        Assert.Equal("cancelled", JsonDocument.Parse(last.Data).RootElement.GetProperty("state").GetString());
    }

    /// <summary>A 404's body with the id asked for and the request's own trace id left out: what could tell one 404 from another.</summary>
    private async Task<string> ProblemAsync(HttpResponseMessage response, string id)
    {
        var problem = System.Text.Json.Nodes.JsonNode.Parse(await response.Content.ReadAsStringAsync(bound.Token))!.AsObject();
        problem.Remove("trace_id");
        problem.Remove("traceId");
        return problem.ToJsonString().Replace(id, "ID", StringComparison.Ordinal);
    }

    private static IEnumerable<(HttpMethod, string)> Routes(string id) =>
    [
        (HttpMethod.Get, $"/api/v1/jobs/{id}"),
        (HttpMethod.Get, $"/api/v1/jobs/{id}/events"),
        (HttpMethod.Post, $"/api/v1/jobs/{id}/cancel"),
        (HttpMethod.Post, $"/api/v1/jobs/{id}/resume"),
        (HttpMethod.Get, $"/api/v1/runs/{id}/log"),
    ];
}
