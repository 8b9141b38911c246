using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;
using SdAppliance.Imaging;

namespace SdAppliance.Web.Tests.A1111;

/// <summary>One appliance for a test class (a real data folder, the demo model), and A1111 calls as clients make them.</summary>
public sealed class A1111Appliance : IAsyncLifetime
{
    public ApplianceFactory Factory { get; } = new();

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync() => await Factory.DisposeAsync();

    /// <summary>A client of its own user, so that its progress and interrupts are its own.</summary>
    public async Task<HttpClient> ClientAsync()
    {
        var client = await Factory.CreateSignedInClientAsync();
        client.Timeout = TimeSpan.FromMinutes(10);  // a bound, not a measure: the 50-request test queues them on one CPU
        return client;
    }
}

internal static class A1111Calls
{
    /// <summary>A small request for the demo model: 64x64, few steps.</summary>
    public static JsonObject Small(long seed, int steps = 3) => new()
    {
        ["prompt"] = "a red circle on a blue background",
        ["seed"] = seed,
        ["steps"] = steps,
        ["width"] = 64,
        ["height"] = 64,
    };

    public static async Task<(HttpStatusCode Status, JsonNode? Body)> PostAsync(this HttpClient client, string path, JsonNode body)
    {
        using var response = await client.PostAsJsonAsync(path, body);
        var text = await response.Content.ReadAsStringAsync();
        return (response.StatusCode, text.Length == 0 ? null : JsonNode.Parse(text));
    }

    public static async Task<JsonNode> GetJsonAsync(this HttpClient client, string path)
    {
        using var response = await client.GetAsync(path);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
    }

    /// <summary>A generation that must succeed: its body.</summary>
    public static async Task<JsonNode> GenerateAsync(this HttpClient client, string path, JsonNode body)
    {
        var (status, answer) = await client.PostAsync(path, body);
        Assert.True(status == HttpStatusCode.OK, $"{path} answered {(int)status}: {answer?.ToJsonString()}");
        return answer!;
    }

    /// <summary><c>info</c>, which A1111 sends as a string of JSON.</summary>
    public static JsonNode Info(JsonNode response) => JsonNode.Parse(response["info"]!.GetValue<string>())!;

    public static byte[] Png(JsonNode response, int index) => Convert.FromBase64String(response["images"]![index]!.GetValue<string>());

    public static RgbImage Image(JsonNode response, int index) => ImageCodec.Decode(Png(response, index));

    /// <summary>A1111's error shape with the field named in its 422 detail.</summary>
    public static void AssertRefused(HttpStatusCode status, JsonNode? body, string field)
    {
        Assert.Equal(HttpStatusCode.UnprocessableEntity, status);
        Assert.NotNull(body);
        foreach (var key in (string[])["error", "detail", "body", "errors"]) Assert.True(body[key] is not null || body.AsObject().ContainsKey(key), $"no '{key}' in {body.ToJsonString()}");
        Assert.Contains(field, body["errors"]!.GetValue<string>(), StringComparison.Ordinal);
        var loc = body["detail"]![0]!["loc"]!.AsArray().Select(n => n!.ToString());
        Assert.Equal(["body", .. field.Split('.')], loc);
    }

    public static JsonSerializerOptions Json { get; } = new(JsonSerializerDefaults.Web);
}
