using System.Net;
using System.Net.Http.Json;
using System.Net.ServerSentEvents;
using System.Text.Json;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using SdAppliance.Appliance.Accounts;
using SdAppliance.Appliance.Persistence;
using SdAppliance.Formats;

namespace SdAppliance.Web.Tests;

/// <summary>
/// Restart recovery on a real process: a LoRA run on the demo model, its host killed with kill -9 after a checkpoint,
/// resumes by itself when the host starts again and ends with the weights of a run that was never interrupted (CPU).
/// </summary>
public sealed class RestartTests : IDisposable
{
    private readonly string data = Directory.CreateTempSubdirectory("sdapp-restart-").FullName;

    // A bound so that a run that never ends fails the test instead of hanging the suite; not a speed check.
    private readonly CancellationTokenSource bound = new(TimeSpan.FromMinutes(10));

    public void Dispose()
    {
        bound.Dispose();
        Directory.Delete(data, recursive: true);
    }

    [Fact]
    public async Task A_training_run_killed_after_a_checkpoint_resumes_by_itself_and_ends_with_the_weights_of_an_uninterrupted_run()
    {
        var token = await CreateAdminTokenAsync();
        TestDatasets.RedSquares(Path.Combine(data, "datasets", "squares"));
        // Many steps after the first checkpoint, so that the kill comes mid-run on any machine.
        var request = new { data = "datasets/squares", resolution = 64, network_dim = 4, network_alpha = 2, max_train_steps = 150, save_every_n_steps = 5 };

        string id;
        long savedStep;
        using (var first = await ChildHost.StartAsync(data, bound.Token))
        using (var client = first.CreateClient(token))
        {
            var submitted = await client.PostAsJsonAsync("/api/v1/jobs/training", request, bound.Token);
            Assert.True(submitted.StatusCode == HttpStatusCode.Created, await submitted.Content.ReadAsStringAsync(bound.Token));
            id = (await submitted.Content.ReadFromJsonAsync<JsonElement>(bound.Token)).GetProperty("id").GetString()!;
            await WaitForAsync(() => CompleteStates(id).Count > 0, "a saved training state", first);
            first.KillHard();
        }
        savedStep = CompleteStates(id).Max();
        Assert.True(savedStep < 150, "the run had ended before the kill: nothing to resume");
        Assert.Empty(Results(id));

        using (var second = await ChildHost.StartAsync(data, bound.Token))
        using (var client = second.CreateClient(token))
        {
            var resumed = await WaitForEndAsync(client, id, second);
            Assert.True(resumed.GetProperty("state").GetString() == "completed", resumed.ToString());
            Assert.Equal(2, resumed.GetProperty("attempts").GetInt32());
            // The second attempt continued from the last saved state: its first step is the one after it, not step 1.
            var events = await EventsAsync(client, id);
            var resuming = events.FindIndex(e => e.GetProperty("message").GetString() == $"resuming from step-{savedStep:D6}");
            Assert.True(resuming >= 0, string.Join('\n', events));
            Assert.Equal(savedStep + 1, events.Skip(resuming).First(e => e.GetProperty("type").GetString() == "step").GetProperty("step").GetInt64());

            var uninterrupted = await client.PostAsJsonAsync("/api/v1/jobs/training", request, bound.Token);
            Assert.Equal(HttpStatusCode.Created, uninterrupted.StatusCode);
            var referenceId = (await uninterrupted.Content.ReadFromJsonAsync<JsonElement>(bound.Token)).GetProperty("id").GetString()!;
            var reference = await WaitForEndAsync(client, referenceId, second);
            Assert.True(reference.GetProperty("state").GetString() == "completed", reference.ToString());
            Assert.Equal(1, reference.GetProperty("attempts").GetInt32());

            AssertSameTensors(Assert.Single(Results(referenceId)), Assert.Single(Results(id)));
        }
    }

    /// <summary>An admin and a token in the data folder's database, made through the appliance's own services.</summary>
    private async Task<string> CreateAdminTokenAsync()
    {
        await using var app = ApplianceHost.Build(["--data", data]);
        await using var scope = app.Services.CreateAsyncScope();
        await using (var db = await scope.ServiceProvider.GetRequiredService<IDbContextFactory<ApplianceDb>>().CreateDbContextAsync(bound.Token))
            await db.Database.MigrateAsync(bound.Token);
        var accounts = scope.ServiceProvider.GetRequiredService<AccountService>();
        var admin = await accounts.CreateFirstAdminAsync("admin", "A long enough passphrase 1", bound.Token);
        return (await accounts.CreateTokenAsync(admin.Id, "restart test", bound.Token)).Secret;
    }

    private async Task<JsonElement> WaitForEndAsync(HttpClient client, string id, ChildHost host)
    {
        JsonElement job = default;
        await WaitForAsync(async () =>
        {
            job = await client.GetFromJsonAsync<JsonElement>($"/api/v1/jobs/{id}", bound.Token);
            return job.GetProperty("state").GetString() is "completed" or "failed" or "cancelled";
        }, $"the end of job {id}", host);
        return job;
    }

    private Task WaitForAsync(Func<bool> condition, string what, ChildHost host) => WaitForAsync(() => Task.FromResult(condition()), what, host);

    private async Task WaitForAsync(Func<Task<bool>> condition, string what, ChildHost host)
    {
        while (!await condition())
        {
            if (bound.IsCancellationRequested) Assert.Fail($"no {what} within the test's bound: {host.Output}");
            await Task.Delay(20, CancellationToken.None);  // a poll interval, not a synchronisation
        }
    }

    private string RunFolder(string id) => Path.Combine(data, "runs", id);

    private List<long> CompleteStates(string id)
    {
        var checkpoints = Path.Combine(RunFolder(id), "checkpoints");
        return Directory.Exists(checkpoints)
            ? [.. Directory.EnumerateDirectories(checkpoints, "step-*")
                .Where(d => File.Exists(Path.Combine(d, "state.json")))
                .Select(d => long.Parse(Path.GetFileName(d)["step-".Length..], System.Globalization.CultureInfo.InvariantCulture))]
            : [];
    }

    private string[] Results(string id) =>
        Directory.Exists(RunFolder(id)) ? Directory.GetFiles(RunFolder(id), "*.safetensors") : [];

    /// <summary>The job's whole event history, read as a client reads it: server-sent events until the (ended) job's stream closes.</summary>
    private async Task<List<JsonElement>> EventsAsync(HttpClient client, string id)
    {
        await using var stream = await client.GetStreamAsync($"/api/v1/jobs/{id}/events", bound.Token);
        var events = new List<JsonElement>();
        await foreach (var item in SseParser.Create(stream).EnumerateAsync(bound.Token)) events.Add(JsonDocument.Parse(item.Data).RootElement);
        return events;
    }

    private static void AssertSameTensors(string expectedFile, string actualFile)
    {
        using var expected = SafetensorsFile.Open(expectedFile);
        using var actual = SafetensorsFile.Open(actualFile);
        Assert.Equal(expected.Names.Order(StringComparer.Ordinal), actual.Names.Order(StringComparer.Ordinal));
        Assert.NotEmpty(expected.Tensors);
        foreach (var entry in expected.Tensors)
            Assert.True(expected.GetSpan(entry).SequenceEqual(actual.GetSpan(entry.Name)), $"tensor {entry.Name} differs from the uninterrupted run's");
    }
}
