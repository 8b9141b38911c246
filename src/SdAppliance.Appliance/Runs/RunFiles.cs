using System.Globalization;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Training.Runs;
using SdAppliance.Training.Samples;

namespace SdAppliance.Appliance.Runs;

/// <summary>A file of a run someone may download: its name in its folder, its size, when it was written.</summary>
public sealed record RunFile(string Name, long Bytes, DateTime ModifiedUtc);

/// <summary>A complete saved training state of a run (<c>checkpoints/step-N</c>), from which it resumes.</summary>
public sealed record RunCheckpoint(string Name, long Step, DateTime SavedUtc);

/// <summary>
/// The folders of training jobs (<c>runs/ID</c>) as the API and the UI show them: the log, the samples, the saved states
/// and the results. A run is seen by whoever may see its job. A file is found by its name among those listed, never by
/// a path built from the request, so no name reaches outside the run's folder.
/// </summary>
public sealed class RunFiles(JobService jobs, ApplianceOptions options)
{
    /// <summary>The run folder's own files, which are not results.</summary>
    private static readonly HashSet<string> Bookkeeping = new(StringComparer.Ordinal) { "run.json", "log.jsonl", "report.json", JobEventLog.FileName };

    /// <summary>The run of training job <paramref name="id"/>, or null when there is none the caller may see.</summary>
    public async Task<RunFolder?> FindAsync(Caller caller, Guid id, CancellationToken cancellationToken) =>
        await jobs.GetAsync(caller, id, cancellationToken) is { Kind: JobKind.Training } job
            ? new RunFolder(Path.Combine(options.DataFolder, job.Folder))
            : null;

    /// <summary>The sample images (<c>step-N-I.png</c>), in step order.</summary>
    public static IReadOnlyList<RunFile> Samples(RunFolder run) => FilesIn(run.SamplesFolder, _ => true);

    /// <summary>The results in the run folder (the LoRA, embedding, model files, and exports made from them).</summary>
    public static IReadOnlyList<RunFile> Results(RunFolder run) =>
        FilesIn(run.Path, name => !Bookkeeping.Contains(name) && !name.StartsWith('.'));

    public static IReadOnlyList<RunCheckpoint> Checkpoints(RunFolder run) =>
        [.. run.CompleteStates.Select(folder => new DirectoryInfo(folder)).Select(d => new RunCheckpoint(
            d.Name, long.Parse(d.Name["step-".Length..], NumberStyles.None, CultureInfo.InvariantCulture), d.LastWriteTimeUtc))];

    /// <summary>The run's sample prompts as it draws them (index i is the prompt of <c>step-N-i.png</c>); none before its settings are written.</summary>
    public static IReadOnlyList<string> SamplePrompts(RunFolder run)
    {
        if (!File.Exists(run.ConfigFile)) return [];
        try
        {
            return [.. SamplePrompt.Of(run.LoadConfig(), firstCaption: null).Select(p => p.Prompt)];
        }
        catch (SdAppliance.Training.TrainingConfigException)
        {
            return [];
        }
    }

    /// <summary>The full path of the sample called <paramref name="name"/>, or null when the run has none by that name.</summary>
    public static string? Sample(RunFolder run, string name) => Pick(run.SamplesFolder, Samples(run), name);

    /// <summary>The full path of the result called <paramref name="name"/>, or null when the run has none by that name.</summary>
    public static string? Result(RunFolder run, string name) => Pick(run.Path, Results(run), name);

    private static string? Pick(string folder, IReadOnlyList<RunFile> files, string name) =>
        files.Any(f => f.Name == name) ? Path.Combine(folder, name) : null;

    private static RunFile[] FilesIn(string folder, Func<string, bool> include) =>
        Directory.Exists(folder)
            ? [.. new DirectoryInfo(folder).EnumerateFiles()
                .Where(f => include(f.Name) && !f.Attributes.HasFlag(FileAttributes.ReparsePoint))
                .OrderBy(f => f.Name, StringComparer.Ordinal)
                .Select(f => new RunFile(f.Name, f.Length, f.LastWriteTimeUtc))]
            : [];
}
