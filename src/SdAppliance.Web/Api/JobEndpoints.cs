using System.Net.ServerSentEvents;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text.Json;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;
using SdAppliance.Appliance.Generation;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Formats;
using SdAppliance.Web.Security;

namespace SdAppliance.Web.Api;

/// <summary><c>/api/v1/jobs</c>: list, submit (one route per kind, the kind's request as the body), get, cancel, resume, events.</summary>
internal static class JobEndpoints
{
    public static void MapJobs(this RouteGroupBuilder api)
    {
        var jobs = api.MapGroup("/jobs").WithTags("Jobs");
        jobs.MapGet("/", List).WithSummary("The caller's jobs (an admin's: everyone's), newest first");
        jobs.MapPost("/generation", SubmitGeneration).Accepts<GenerationJobRequest>("application/json")
            .WithSummary("Queues a generation (txt2img, or img2img with init_image: an image file in the data folder)");
        jobs.MapPost("/{kind}", Submit)
            .WithSummary("Queues a job of another kind: training (a run.json TrainingConfig), class_images or conversion, its request as the body");
        jobs.MapGet("/{id:guid}", Get).WithSummary("One job");
        jobs.MapPost("/{id:guid}/cancel", Cancel).WithSummary("Cancels a queued or running job");
        jobs.MapPost("/{id:guid}/resume", Resume).WithSummary("Queues a failed or cancelled training job again, from its last saved state");
        jobs.MapGet("/{id:guid}/events", Events)
            .WithSummary("The job's events as server-sent events: its history, then live ones until it ends; Last-Event-ID resumes after that event");
    }

    private static async Task<Ok<IReadOnlyList<JobView>>> List(HttpContext http, JobService jobs, CancellationToken cancellationToken, string? state = null) =>
        TypedResults.Ok(await jobs.ListAsync(http.User.ToCaller(), state is null ? null : ApiNames.Parse<JobState>("state", state), cancellationToken));

    private static async Task<Created<JobView>> Submit(
        HttpContext http, JobService jobs, string kind, [FromBody] JsonElement request, CancellationToken cancellationToken, int priority = 0)
    {
        var submission = new JobSubmission(ApiNames.Parse<JobKind>("kind", kind), http.User.ToCaller().UserId, request, priority);
        var job = await jobs.SubmitAsync(submission, cancellationToken);
        return TypedResults.Created($"/api/v1/jobs/{job.Id}", job);
    }

    private static async Task<Created<JobView>> SubmitGeneration(
        HttpContext http, GenerationJobs generations, [FromBody] JsonElement body, CancellationToken cancellationToken, int priority = 0)
    {
        var request = RequestBodies.Read(body, GenerationJobRequest.FromJson);
        var job = await generations.SubmitAsync(http.User.ToCaller(), request, initImage: null, cancellationToken, priority);
        return TypedResults.Created($"/api/v1/jobs/{job.Id}", job);
    }

    private static async Task<Results<Ok<JobView>, ProblemHttpResult>> Get(HttpContext http, JobService jobs, Guid id, CancellationToken cancellationToken) =>
        await jobs.GetAsync(http.User.ToCaller(), id, cancellationToken) is { } job ? TypedResults.Ok(job) : ApiProblems.NotFound($"job {id}");

    private static async Task<Results<Ok<JobView>, ProblemHttpResult>> Cancel(HttpContext http, JobService jobs, Guid id, CancellationToken cancellationToken)
    {
        var caller = http.User.ToCaller();
        return await jobs.CancelAsync(caller, id, cancellationToken) && await jobs.GetAsync(caller, id, cancellationToken) is { } job
            ? TypedResults.Ok(job)
            : ApiProblems.NotFound($"queued or running job {id}");
    }

    private static async Task<Results<Ok<JobView>, ProblemHttpResult>> Resume(HttpContext http, JobService jobs, Guid id, CancellationToken cancellationToken) =>
        await jobs.ResumeAsync(http.User.ToCaller(), id, cancellationToken) is { } job ? TypedResults.Ok(job) : ApiProblems.NotFound($"failed or cancelled training job {id}");

    private static async Task<Results<ServerSentEventsResult<JobEvent>, ProblemHttpResult>> Events(
        HttpContext http, JobService jobs, Guid id, [FromHeader(Name = "Last-Event-ID")] string? lastEventId, CancellationToken cancellationToken)
    {
        var after = lastEventId is null ? 0 : long.TryParse(lastEventId, out var sequence) && sequence >= 0 ? sequence
            : throw new UserInputException("Last-Event-ID", $"'{lastEventId}' is not an event id", "send the id: of the last event received, a whole number");
        if (await jobs.GetAsync(http.User.ToCaller(), id, cancellationToken) is null) return ApiProblems.NotFound($"job {id}");
        return TypedResults.ServerSentEvents(AsItems(jobs.EventsAsync(id, after, cancellationToken), cancellationToken));
    }

    private static async IAsyncEnumerable<SseItem<JobEvent>> AsItems(IAsyncEnumerable<JobEvent> events, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        await foreach (var e in events.WithCancellation(cancellationToken))
            yield return new SseItem<JobEvent>(e, e.Type) { EventId = e.Sequence.ToString(CultureInfo.InvariantCulture) };
    }
}
