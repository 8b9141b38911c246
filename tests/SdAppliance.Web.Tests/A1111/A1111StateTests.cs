using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.DependencyInjection;
using SdAppliance.Appliance.Jobs;

namespace SdAppliance.Web.Tests.A1111;

/// <summary>progress and interrupt: what clients poll and call around a generation.</summary>
public sealed class A1111StateTests(A1111Appliance appliance) : IClassFixture<A1111Appliance>
{
    [Fact]
    public async Task Idle_progress_is_exactly_zero_with_no_jobs()
    {
        using var client = await appliance.ClientAsync();
        var progress = await client.GetJsonAsync("/sdapi/v1/progress?skip_current_image=false");
        Assert.Equal(0, progress["progress"]!.GetValue<double>());
        Assert.Equal(0, progress["state"]!["job_count"]!.GetValue<int>());
        Assert.False(progress["state"]!["interrupted"]!.GetValue<bool>());
    }

    [Fact]
    public async Task Interrupt_stops_the_callers_running_job_and_the_next_one_runs_whole()
    {
        using var client = await appliance.ClientAsync();
        var body = A1111Calls.Small(5, steps: 5000);  // far more than it gets to run
        var running = client.PostAsync("/sdapi/v1/txt2img", body);

        // Bounded: fails (instead of hanging) when the job never reports a step.
        JsonNode progress;
        var deadline = DateTime.UtcNow.AddMinutes(3);
        do
        {
            Assert.True(DateTime.UtcNow < deadline, "the generation never reported a step");
            Assert.False(running.IsCompleted, "the generation ended before it was interrupted");
            await Task.Delay(50);
            progress = await client.GetJsonAsync("/sdapi/v1/progress");
        }
        while (progress["state"]!["sampling_step"]!.GetValue<long>() == 0);
        Assert.Equal(1, progress["state"]!["job_count"]!.GetValue<int>());
        Assert.InRange(progress["progress"]!.GetValue<double>(), double.Epsilon, 1);
        Assert.Equal(5000, progress["state"]!["sampling_steps"]!.GetValue<long>());

        var (status, answer) = await client.PostAsync("/sdapi/v1/interrupt", new JsonObject());
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("{}", answer!.ToJsonString());
        var (interruptedStatus, interrupted) = await running.WaitAsync(TimeSpan.FromMinutes(3));
        Assert.Equal(HttpStatusCode.OK, interruptedStatus);
        Assert.Empty(interrupted!["images"]!.AsArray());

        var next = await client.GenerateAsync("/sdapi/v1/txt2img", A1111Calls.Small(6, steps: 2));
        Assert.Single(next["images"]!.AsArray());
        var idle = await client.GetJsonAsync("/sdapi/v1/progress");
        Assert.Equal(0, idle["progress"]!.GetValue<double>());
        Assert.Equal(0, idle["state"]!["job_count"]!.GetValue<int>());
    }

    [Fact]
    public async Task A_client_that_goes_away_cancels_its_generation()
    {
        using var client = await appliance.ClientAsync();
        using var leave = new CancellationTokenSource();
        var request = client.PostAsJsonAsync("/sdapi/v1/txt2img", A1111Calls.Small(9, steps: 5000), leave.Token);

        var jobs = appliance.Factory.Services.GetRequiredService<JobService>();
        var admin = new Caller("tests", IsAdmin: true);
        var deadline = DateTime.UtcNow.AddMinutes(3);
        JobView? job;
        while ((job = (await jobs.ListAsync(admin, JobState.Running, CancellationToken.None)).FirstOrDefault(j => j.Request.GetProperty("seed").GetInt64() == 9)) is null)
        {
            Assert.True(DateTime.UtcNow < deadline, "the generation never started");
            await Task.Delay(50);
        }
        await leave.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => request);

        using var bound = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        Assert.Equal(JobState.Cancelled, (await jobs.WaitAsync(job.Id, bound.Token)).State);
    }

    [Fact]
    public async Task Interrupt_with_nothing_running_changes_nothing()
    {
        using var client = await appliance.ClientAsync();
        var (status, _) = await client.PostAsync("/sdapi/v1/interrupt", new JsonObject());
        Assert.Equal(HttpStatusCode.OK, status);
        var next = await client.GenerateAsync("/sdapi/v1/txt2img", A1111Calls.Small(8, steps: 2));
        Assert.Single(next["images"]!.AsArray());
    }
}
