using System.Globalization;
using System.Net;
using System.Text;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Storage;
using SdAppliance.Web.Security;

namespace SdAppliance.Web.Api;

/// <summary>The page at <c>/</c> until the browser UI arrives: the devices, the caller's queue, their recent outputs; plain HTML, no script.</summary>
internal static class StatusPage
{
    private const int RecentJobs = 20;
    private const int RecentOutputs = 10;

    public static async Task<IResult> Render(HttpContext http, JobService jobs, JobScheduler scheduler, OutputService outputs, CancellationToken cancellationToken)
    {
        var caller = http.User.ToCaller();
        var list = await jobs.ListAsync(caller, state: null, cancellationToken);
        var html = new StringBuilder();
        html.Append("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>SdAppliance</title>")
            .Append("<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{padding:.2em .8em;text-align:left;border-bottom:1px solid #ddd}</style>")
            .Append("</head><body><h1>SdAppliance</h1>");

        html.Append("<h2>Devices</h2><ul>");
        foreach (var device in scheduler.Devices)
        {
            var job = list.FirstOrDefault(j => j.State == JobState.Running && j.Device == device);
            html.Append("<li>").Append(Encode(device)).Append(job is null ? "" : $": running {Encode(ApiNames.Of(job.Kind))} job {Encode(job.Id.ToString())}").Append("</li>");
        }
        html.Append("</ul>");

        html.Append("<h2>Queue</h2>");
        var active = list.Where(j => j.State is JobState.Queued or JobState.Running).ToList();
        Table(html, active.Count == 0 ? "nothing queued or running" : null, active);

        html.Append("<h2>Recent jobs</h2>");
        var finished = list.Where(j => j.State is not (JobState.Queued or JobState.Running)).Take(RecentJobs).ToList();
        Table(html, finished.Count == 0 ? "none yet" : null, finished);

        html.Append("<h2>Recent outputs</h2>");
        var recent = await outputs.ListAsync(caller, day: null, RecentOutputs, cancellationToken);
        if (recent.Count == 0) html.Append("<p>none yet</p>");
        else
        {
            html.Append("<ul>");
            foreach (var output in recent)
                html.Append("<li><a href=\"").Append(Encode(RestApi.Prefix + "/outputs/" + output.Path)).Append("\">").Append(Encode(output.Path)).Append("</a></li>");
            html.Append("</ul>");
        }

        html.Append("<p><a href=\"/scalar\">REST API reference</a> · <a href=\"/openapi/v1.json\">OpenAPI document</a></p></body></html>");
        return Results.Content(html.ToString(), "text/html; charset=utf-8");
    }

    private static void Table(StringBuilder html, string? empty, IReadOnlyList<JobView> jobs)
    {
        if (empty is not null)
        {
            html.Append("<p>").Append(empty).Append("</p>");
            return;
        }
        html.Append("<table><tr><th>job</th><th>kind</th><th>state</th><th>progress</th><th>submitted (UTC)</th><th>error</th></tr>");
        foreach (var job in jobs)
            html.Append("<tr><td>").Append(Encode(job.Id.ToString()))
                .Append("</td><td>").Append(Encode(ApiNames.Of(job.Kind)))
                .Append("</td><td>").Append(Encode(ApiNames.Of(job.State)))
                .Append("</td><td>").Append(job.TotalSteps > 0 ? string.Create(CultureInfo.InvariantCulture, $"{job.Step}/{job.TotalSteps}") : "")
                .Append("</td><td>").Append(job.CreatedUtc.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture))
                .Append("</td><td>").Append(Encode(job.Error ?? ""))
                .Append("</td></tr>");
        html.Append("</table>");
    }

    private static string Encode(string text) => WebUtility.HtmlEncode(text);
}
