using System.Net;
using System.Net.Http.Json;
using System.Net.ServerSentEvents;
using System.Text.Json;
using SdAppliance.Imaging;

namespace SdAppliance.Web.Tests;

/// <summary>The REST job lifecycle on the demo model: submit, the events as server-sent events, the result, the output file.</summary>
public sealed class JobsApiTests : IDisposable
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
    public async Task A_generation_job_streams_its_events_to_completion_and_its_image_downloads()
    {
        using var client = factory.CreateSignedInClient();
        var submitted = await client.PostAsJsonAsync("/api/v1/jobs/generation", new { prompt = "a red circle on a blue background", steps = 3, seed = 7 }, bound.Token);
        Assert.Equal(HttpStatusCode.Created, submitted.StatusCode);
        var job = await submitted.Content.ReadFromJsonAsync<JsonElement>(bound.Token);
        var id = job.GetProperty("id").GetString()!;
        Assert.Equal("generation", job.GetProperty("kind").GetString());
        Assert.Equal($"/api/v1/jobs/{id}", submitted.Headers.Location?.OriginalString);

        var events = await ReadEventsAsync(client, id, lastEventId: null);

        // Every event once, in order, numbered from 1; the stream ends with the job.
        Assert.Equal(Enumerable.Range(1, events.Count).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)), events.Select(e => e.EventId));
        var states = events.Where(e => e.EventType == "state").Select(e => Data(e).GetProperty("state").GetString()).ToList();
        Assert.Equal(["queued", "running", "completed"], states);
        var steps = events.Where(e => e.EventType == "step").Select(e => Data(e).GetProperty("step").GetInt64()).ToList();
        Assert.Equal([1, 2, 3], steps);
        var image = Assert.Single(events, e => e.EventType == "image");
        var file = Data(image).GetProperty("image").GetString()!;

        var done = await client.GetFromJsonAsync<JsonElement>($"/api/v1/jobs/{id}", bound.Token);
        Assert.Equal("completed", done.GetProperty("state").GetString());
        var result = Assert.Single(done.GetProperty("result").GetProperty("images").EnumerateArray());
        Assert.Equal(file, result.GetProperty("file").GetString());
        Assert.Equal(7, result.GetProperty("seed").GetInt64());

        // The picture itself, with the infotext the result names in its parameters chunk.
        var download = await client.GetAsync("/api/v1/outputs/" + file["outputs/".Length..], bound.Token);
        Assert.Equal(HttpStatusCode.OK, download.StatusCode);
        Assert.Equal("image/png", download.Content.Headers.ContentType?.MediaType);
        var png = await download.Content.ReadAsByteArrayAsync(bound.Token);
        var parameters = ImageCodec.Decode(png).Text[ImageCodec.ParametersKey];
        Assert.Equal(result.GetProperty("infotext").GetString(), parameters);
        Assert.Contains("Seed: 7", parameters);

        // Last-Event-ID: a client that reconnects gets what came after the last event it saw, and nothing twice.
        var rest = await ReadEventsAsync(client, id, lastEventId: "2");
        Assert.Equal(events.Skip(2).Select(e => e.EventId), rest.Select(e => e.EventId));
    }

    [Fact]
    public async Task A_refused_request_is_a_problem_naming_its_field()
    {
        using var client = factory.CreateSignedInClient();
        var response = await client.PostAsJsonAsync("/api/v1/jobs/generation", new { prompt = "x", steps = 0 }, bound.Token);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = await response.Content.ReadFromJsonAsync<JsonElement>(bound.Token);
        Assert.Equal("steps", problem.GetProperty("field").GetString());
        Assert.Equal(400, problem.GetProperty("status").GetInt32());
    }

    [Theory]
    [InlineData("/api/v1/jobs/generation", """{"steps": "many"}""", "steps")]
    [InlineData("/api/v1/jobs/generation", "[1, 2]", "body")]
    [InlineData("/api/v1/jobs/painting", "{}", "kind")]
    public async Task A_body_or_route_that_cannot_be_read_is_a_problem_naming_where(string url, string body, string field)
    {
        using var client = factory.CreateSignedInClient();
        using var content = new StringContent(body, System.Text.Encoding.UTF8, "application/json");
        var response = await client.PostAsync(url, content, bound.Token);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var problem = await response.Content.ReadFromJsonAsync<JsonElement>(bound.Token);
        Assert.Equal(field, problem.GetProperty("field").GetString());
    }

    [Fact]
    public async Task A_Last_Event_ID_that_is_not_an_event_number_is_a_problem_naming_the_header()
    {
        using var client = factory.CreateSignedInClient();
        var submitted = await client.PostAsJsonAsync("/api/v1/jobs/generation", new { prompt = "a red circle", steps = 1, seed = 1 }, bound.Token);
        var id = (await submitted.Content.ReadFromJsonAsync<JsonElement>(bound.Token)).GetProperty("id").GetString()!;
        using var request = new HttpRequestMessage(HttpMethod.Get, $"/api/v1/jobs/{id}/events");
        request.Headers.Add("Last-Event-ID", "yesterday");
        var response = await client.SendAsync(request, bound.Token);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var problem = await response.Content.ReadFromJsonAsync<JsonElement>(bound.Token);
        Assert.Equal("Last-Event-ID", problem.GetProperty("field").GetString());
    }

    [Fact]
    public async Task A_training_request_that_cannot_run_is_refused_when_submitted()
    {
        using var client = factory.CreateSignedInClient();
        var response = await client.PostAsJsonAsync("/api/v1/jobs/training", new { data = "../../outside", resolution = 64 }, bound.Token);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var problem = await response.Content.ReadFromJsonAsync<JsonElement>(bound.Token);
        Assert.Equal("data", problem.GetProperty("field").GetString());
        Assert.Empty(await client.GetFromJsonAsync<JsonElement[]>("/api/v1/jobs", bound.Token) ?? []);
    }

    [Fact]
    public async Task A_job_that_does_not_exist_is_a_problem_404()
    {
        using var client = factory.CreateSignedInClient();
        var response = await client.GetAsync($"/api/v1/jobs/{Guid.NewGuid()}", bound.Token);

        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
    }

    private async Task<List<SseItem<string>>> ReadEventsAsync(HttpClient client, string id, string? lastEventId)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, $"/api/v1/jobs/{id}/events");
        if (lastEventId is not null) request.Headers.Add("Last-Event-ID", lastEventId);
        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, bound.Token);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        await using var stream = await response.Content.ReadAsStreamAsync(bound.Token);
        var events = new List<SseItem<string>>();
        await foreach (var item in SseParser.Create(stream).EnumerateAsync(bound.Token)) events.Add(item);
        return events;
    }

    private static JsonElement Data(SseItem<string> item) => JsonDocument.Parse(item.Data).RootElement;
}
