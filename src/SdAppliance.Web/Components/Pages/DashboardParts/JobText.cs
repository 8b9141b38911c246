using System.Globalization;
using System.Text.Json;
using SdAppliance.Appliance.Jobs;

namespace SdAppliance.Web.Components.Pages.DashboardParts;

/// <summary>How the dashboard names a job and its figures in a line.</summary>
public static class JobText
{
    private static readonly string[] Describing = ["prompt", "output_name", "name", "dataset", "model", "source"];

    public static string Kind(JobKind kind) => kind switch
    {
        JobKind.Training => "Training",
        JobKind.Generation => "Generation",
        JobKind.ClassImages => "Class images",
        JobKind.Conversion => "Conversion",
        JobKind.Captioning => "Auto-caption",
        _ => kind.ToString(),
    };

    /// <summary>What the request is about (its prompt, its output's name, ...), shortened; empty when it says nothing of it.</summary>
    public static string Summary(JobView job, int length = 70)
    {
        if (job.Request.ValueKind != JsonValueKind.Object) return "";
        foreach (var name in Describing)
            if (job.Request.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String && value.GetString() is { Length: > 0 } text)
                return text.Length <= length ? text : text[..(length - 1)] + "…";
        return "";
    }

    public static string Duration(double seconds)
    {
        if (double.IsNaN(seconds) || double.IsInfinity(seconds) || seconds < 0) return "";
        var span = TimeSpan.FromSeconds(Math.Round(seconds));
        return span.TotalHours >= 1 ? $"{(int)span.TotalHours}h {span.Minutes:D2}m" : span.TotalMinutes >= 1 ? $"{span.Minutes}m {span.Seconds:D2}s" : $"{span.Seconds}s";
    }

    public static string Number(double value, string format = "0.####") => value.ToString(format, CultureInfo.InvariantCulture);

    public static string When(DateTime utc) => utc.ToString("yyyy-MM-dd HH:mm 'UTC'", CultureInfo.InvariantCulture);
}
