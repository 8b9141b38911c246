// bench-serve: N concurrent A1111 txt2img clients against a running appliance, printed as `name: value unit` lines.
//   dotnet run -c Release --project tools/bench-serve -- --url http://localhost:5000 [--clients 8] [--requests 50]
//       [--steps 4] [--size 64] [--prompt TEXT] [--token TOKEN | --user NAME --password PASSWORD] [--timeout 600]
// Each client posts /sdapi/v1/txt2img (seed = the request's number; --size square, by default 64, the demo model's, as
// A1111's own default is 512) as soon as its previous answer came, until --requests were sent in all. A request counts as failed when the answer is not 200 with at least
// one image, or it times out; latency is from sending to the whole answer. The server is not started here: the figures
// are those of the appliance as it runs (`./sdapp serve`), its queue shared by every client.
using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;

string? Option(string name)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
}

int IntOption(string name, int fallback, int minimum)
{
    if (Option(name) is not { } text) return fallback;
    if (int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) && value >= minimum) return value;
    Console.Error.WriteLine($"bench-serve: {name}: '{text}' is not a whole number of at least {minimum}");
    Environment.Exit(1);
    return 0;
}

var url = Option("--url") ?? "http://localhost:5000";
var clients = IntOption("--clients", 8, 1);
var total = IntOption("--requests", 50, 1);
var steps = IntOption("--steps", 4, 1);
var size = IntOption("--size", 64, 8);
var timeout = IntOption("--timeout", 600, 1);
var prompt = Option("--prompt") ?? "a red circle on a blue background";

using var http = new HttpClient { BaseAddress = new Uri(url), Timeout = TimeSpan.FromSeconds(timeout) };
if (Option("--token") is { } token) http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
else if (Option("--user") is { } user)
{
    var password = Option("--password") ?? "";
    http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{user}:{password}")));
}

Console.WriteLine($"url: {url}");
Console.WriteLine($"clients: {clients}");
Console.WriteLine($"requests: {total}");
Console.WriteLine($"steps: {steps}");
Console.WriteLine($"size: {size}");

var next = -1;
var latencies = new List<double>();
var failures = 0;
var firstFailure = (string?)null;
var clock = Stopwatch.StartNew();
await Task.WhenAll(Enumerable.Range(0, clients).Select(_ => Task.Run(async () =>
{
    for (var n = Interlocked.Increment(ref next); n < total; n = Interlocked.Increment(ref next))
    {
        var started = clock.Elapsed;
        var problem = await Txt2Img(n);
        var seconds = (clock.Elapsed - started).TotalSeconds;
        lock (latencies)
        {
            if (problem is null) latencies.Add(seconds);
            else
            {
                failures++;
                firstFailure ??= $"request {n}: {problem}";
            }
        }
    }
})));
var elapsed = clock.Elapsed.TotalSeconds;

latencies.Sort();
Console.WriteLine($"succeeded: {latencies.Count}");
Console.WriteLine($"failures: {failures}");
if (firstFailure is not null) Console.WriteLine($"first_failure: {firstFailure}");
Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"wall: {elapsed:0.00} s"));
Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"requests_per_second: {latencies.Count / elapsed:0.000} req/s"));
if (latencies.Count > 0)
{
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"latency_p50: {Percentile(0.50):0.000} s"));
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"latency_p95: {Percentile(0.95):0.000} s"));
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"latency_max: {latencies[^1]:0.000} s"));
}
return failures == 0 ? 0 : 1;

// The nearest-rank percentile of the successful requests' latencies.
double Percentile(double p) => latencies[Math.Clamp((int)Math.Ceiling(p * latencies.Count) - 1, 0, latencies.Count - 1)];

// Null when the answer is 200 with at least one image, else what went wrong.
async Task<string?> Txt2Img(int n)
{
    try
    {
        using var response = await http.PostAsJsonAsync("/sdapi/v1/txt2img", new { prompt, steps, seed = n, batch_size = 1, width = size, height = size });
        var body = await response.Content.ReadAsStringAsync();
        if (!response.IsSuccessStatusCode) return $"HTTP {(int)response.StatusCode}: {body[..Math.Min(body.Length, 200)]}";
        using var json = JsonDocument.Parse(body);
        return json.RootElement.TryGetProperty("images", out var images) && images.ValueKind == JsonValueKind.Array && images.GetArrayLength() > 0
            ? null
            : "the answer holds no image";
    }
    catch (Exception e) when (e is HttpRequestException or TaskCanceledException or JsonException)
    {
        return e.GetType().Name + ": " + e.Message;
    }
}
