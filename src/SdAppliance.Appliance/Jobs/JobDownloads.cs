using System.IO.Compression;
using SdAppliance.Appliance.Storage;
using SdAppliance.Formats;

namespace SdAppliance.Appliance.Jobs;

/// <summary>A job's result file to send: where it is, the name to save it as, its media type.</summary>
public sealed record JobDownload(string Path, string FileName, string ContentType);

/// <summary>
/// The result of a finished conversion/export job as one file to download, for whoever may see the job (its owner and
/// admins): the file the job wrote into its own folder, or a folder it wrote (a diffusers model) as a <c>.zip</c>, made
/// once beside it (written under a temporary name, then renamed). Nothing outside the job's folder is served.
/// </summary>
public sealed class JobDownloads(JobService jobs, DataFolder data)
{
    /// <summary>The download of job <paramref name="id"/>; null when the caller may not see it, it has not completed, or it has no file to download.</summary>
    public async Task<JobDownload?> FindAsync(Caller caller, Guid id, CancellationToken cancellationToken)
    {
        var job = await jobs.GetAsync(caller, id, cancellationToken);
        if (job is not { Kind: JobKind.Conversion, State: JobState.Completed, Result: { } result }) return null;
        if (!result.TryGetProperty("output", out var output) || output.GetString() is not { Length: > 0 } relative) return null;
        var folder = Path.TrimEndingDirectorySeparator(Path.GetFullPath(Path.Combine(data.FullPath, job.Folder)));
        var path = Path.TrimEndingDirectorySeparator(Path.GetFullPath(Path.Combine(data.FullPath, relative)));
        if (!path.StartsWith(folder + Path.DirectorySeparatorChar, StringComparison.Ordinal)) return null;
        if (File.Exists(path)) return new JobDownload(path, Path.GetFileName(path), "application/octet-stream");
        if (!Directory.Exists(path)) return null;
        var zip = path + ".zip";
        if (!File.Exists(zip))
        {
            // Weights do not shrink much: store them quickly.
            await Task.Run(() => AtomicFile.Write(zip, stream =>
                ZipFile.CreateFromDirectory(path, stream, CompressionLevel.Fastest, includeBaseDirectory: true)), cancellationToken);
        }
        return new JobDownload(zip, Path.GetFileName(zip), "application/zip");
    }
}
