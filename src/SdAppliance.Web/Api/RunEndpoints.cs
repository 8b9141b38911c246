using Microsoft.AspNetCore.Http.HttpResults;
using SdAppliance.Appliance.Runs;
using SdAppliance.Web.Security;

namespace SdAppliance.Web.Api;

/// <summary><c>/api/v1/runs/{id}</c> (a training job's id): its log, samples, saved states and results.</summary>
internal static class RunEndpoints
{
    public static void MapRuns(this RouteGroupBuilder api)
    {
        var runs = api.MapGroup("/runs/{id:guid}").WithTags("Runs");
        runs.MapGet("/log", Log).WithSummary("The step log, one JSON object per line (step, loss, smoothed loss, lr, it/s, ETA, memory)");
        runs.MapGet("/samples", Samples).WithSummary("The sample images");
        runs.MapGet("/samples/{name}", Sample).WithSummary("One sample image");
        runs.MapGet("/checkpoints", Checkpoints).WithSummary("The saved training states the run can resume from");
        runs.MapGet("/results", Results).WithSummary("The results (LoRA, embedding, model files and their exports)");
        runs.MapGet("/results/{name}", Result).WithSummary("Downloads one result");
    }

    private static async Task<IResult> Log(HttpContext http, RunFiles runs, Guid id, CancellationToken cancellationToken) =>
        await runs.FindAsync(http.User.ToCaller(), id, cancellationToken) is not { } run ? NoRun(id)
        : File.Exists(run.LogFile) ? TypedResults.PhysicalFile(run.LogFile, "application/x-ndjson")
        : TypedResults.Text("", "application/x-ndjson");  // no step yet

    private static async Task<IResult> Samples(HttpContext http, RunFiles runs, Guid id, CancellationToken cancellationToken) =>
        await runs.FindAsync(http.User.ToCaller(), id, cancellationToken) is { } run ? TypedResults.Ok(RunFiles.Samples(run)) : NoRun(id);

    private static async Task<IResult> Sample(HttpContext http, RunFiles runs, Guid id, string name, CancellationToken cancellationToken) =>
        await runs.FindAsync(http.User.ToCaller(), id, cancellationToken) is not { } run ? NoRun(id)
        : RunFiles.Sample(run, name) is { } file ? TypedResults.PhysicalFile(file, "image/png")
        : ApiProblems.NotFound($"sample '{name}' in run {id}");

    private static async Task<IResult> Checkpoints(HttpContext http, RunFiles runs, Guid id, CancellationToken cancellationToken) =>
        await runs.FindAsync(http.User.ToCaller(), id, cancellationToken) is { } run ? TypedResults.Ok(RunFiles.Checkpoints(run)) : NoRun(id);

    private static async Task<IResult> Results(HttpContext http, RunFiles runs, Guid id, CancellationToken cancellationToken) =>
        await runs.FindAsync(http.User.ToCaller(), id, cancellationToken) is { } run ? TypedResults.Ok(RunFiles.Results(run)) : NoRun(id);

    private static async Task<IResult> Result(HttpContext http, RunFiles runs, Guid id, string name, CancellationToken cancellationToken) =>
        await runs.FindAsync(http.User.ToCaller(), id, cancellationToken) is not { } run ? NoRun(id)
        : RunFiles.Result(run, name) is { } file ? TypedResults.PhysicalFile(file, "application/octet-stream", name)
        : ApiProblems.NotFound($"result '{name}' in run {id}");

    private static ProblemHttpResult NoRun(Guid id) => ApiProblems.NotFound($"training run {id}");
}
