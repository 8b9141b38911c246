using System.Globalization;
using System.Text.RegularExpressions;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Formats;
using SdAppliance.Imaging;

namespace SdAppliance.Appliance.Storage;

/// <summary>A generated image in <c>outputs/</c>.</summary>
/// <param name="Path">Relative to <c>outputs/</c>: <c>yyyy-MM-dd/NNNNN-SEED.png</c>, what download takes.</param>
/// <param name="Day">The day folder, <c>yyyy-MM-dd</c> (UTC).</param>
/// <param name="OwnerId">Who generated it; null for a file put there by hand.</param>
public sealed record OutputView(string Path, string Day, string? OwnerId, long SizeBytes, DateTime CreatedUtc);

/// <summary>A file ready to be sent (an output, a dataset image): its full path on the server, its file name and media type.</summary>
public sealed record FileDownload(string FullPath, string FileName, string ContentType, long Length)
{
    /// <summary>The file at <paramref name="fullPath"/>, its media type told by its first bytes (an image) or else its extension.</summary>
    public static FileDownload Of(string fullPath)
    {
        Span<byte> head = stackalloc byte[16];
        int read;
        using (var stream = File.OpenRead(fullPath))
            read = stream.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        var contentType = ImageCodec.DetectFormat(head[..read]) switch
        {
            ImageFormat.Png => "image/png",
            ImageFormat.Jpeg => "image/jpeg",
            ImageFormat.WebP => "image/webp",
            _ => System.IO.Path.GetExtension(fullPath).Equals(".txt", StringComparison.OrdinalIgnoreCase) ? "text/plain; charset=utf-8" : "application/octet-stream",
        };
        return new FileDownload(fullPath, System.IO.Path.GetFileName(fullPath), contentType, new FileInfo(fullPath).Length);
    }
}

/// <summary>
/// The generated images: saved to <c>outputs/yyyy-MM-dd/</c> (numbered as A1111 numbers them, <c>00001-SEED.png</c>),
/// written atomically, each with its owner recorded; listed newest first (a user sees their own, an admin all, and a file
/// put there by hand only an admin); opened for download through the <see cref="PathGuard"/>.
/// </summary>
public sealed partial class OutputService(DataFolder data, PathGuard guard, Ownership ownership)
{
    // Numbering within one process; AtomicFile's rename still keeps another process's file whole.
    private readonly SemaphoreSlim numbering = new(1, 1);

    /// <summary>Encodes <paramref name="image"/> as PNG with its text (the <c>parameters</c> infotext) and saves it for <paramref name="ownerId"/>.</summary>
    public Task<OutputView> SaveAsync(string ownerId, RgbImage image, long? seed, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(image);
        return SaveAsync(ownerId, ImageCodec.Encode(image), seed, cancellationToken);
    }

    /// <summary>Saves an encoded PNG (the bytes an API answer carries) for <paramref name="ownerId"/>.</summary>
    public async Task<OutputView> SaveAsync(string ownerId, ReadOnlyMemory<byte> png, long? seed, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(ownerId);
        if (ImageCodec.DetectFormat(png.Span) != ImageFormat.Png)
            throw new ArgumentException("an output is stored as PNG", nameof(png));
        var now = DateTime.UtcNow;
        var folder = data.OutputsOn(now);
        Directory.CreateDirectory(folder);
        string path;
        await numbering.WaitAsync(cancellationToken);
        try
        {
            var number = NextNumber(folder);
            var name = seed is { } s ? $"{number:D5}-{s.ToString(CultureInfo.InvariantCulture)}.png" : $"{number:D5}.png";
            path = System.IO.Path.Combine(folder, name);
            AtomicFile.WriteAllBytes(path, png);
        }
        finally
        {
            numbering.Release();
        }
        var relative = Relative(path);
        var item = await ownership.RecordAsync(StorageArea.Outputs, relative, ownerId, isPrivate: true, cancellationToken);
        return new OutputView(relative, System.IO.Path.GetFileName(folder), item.OwnerId, png.Length, now);
    }

    /// <summary>
    /// The outputs the caller may see, newest first (by day, then by number), of one day (<c>yyyy-MM-dd</c>) or of all,
    /// at most <paramref name="limit"/>.
    /// </summary>
    public async Task<IReadOnlyList<OutputView>> ListAsync(Caller caller, string? day, int limit, CancellationToken cancellationToken)
    {
        if (limit < 1) throw new UserInputException("limit", $"{limit} must be at least 1");
        if (day is not null && !DayPattern().IsMatch(day))
            throw new UserInputException("day", $"'{day}' is not a day", "give it as yyyy-MM-dd, such as 2026-12-02");
        var owned = await ownership.InAsync(StorageArea.Outputs, cancellationToken);
        var list = new List<OutputView>();
        if (!Directory.Exists(data.Outputs)) return list;
        var days = Directory.EnumerateDirectories(data.Outputs).Select(System.IO.Path.GetFileName).OfType<string>()
            .Where(d => DayPattern().IsMatch(d) && (day is null || d == day))
            .OrderDescending(StringComparer.Ordinal);
        foreach (var d in days)
        {
            var files = new DirectoryInfo(System.IO.Path.Combine(data.Outputs, d)).EnumerateFiles()
                .Where(f => !f.Name.StartsWith('.'))
                .OrderByDescending(f => f.Name, StringComparer.Ordinal);
            foreach (var file in files)
            {
                var relative = $"{d}/{file.Name}";
                var item = owned.GetValueOrDefault(relative);
                if (!caller.IsAdmin && item?.OwnerId != caller.UserId) continue;
                list.Add(new OutputView(relative, d, item?.OwnerId, file.Length, item?.CreatedUtc ?? file.LastWriteTimeUtc));
                if (list.Count == limit) return list;
            }
        }
        return list;
    }

    /// <summary>The output at <paramref name="path"/> (relative to <c>outputs/</c>) for download; null when there is none the caller may see.</summary>
    public async Task<FileDownload?> OpenAsync(Caller caller, string path, CancellationToken cancellationToken)
    {
        var full = guard.Resolve(path, data.Outputs);
        if (!File.Exists(full) || FileKind.NotRegular(full) is not null) return null;
        var item = await ownership.FindAsync(StorageArea.Outputs, Relative(full), cancellationToken);
        if (!caller.IsAdmin && item?.OwnerId != caller.UserId) return null;
        return FileDownload.Of(full);
    }

    /// <summary>
    /// Deletes an output: its owner or an admin may (a file put there by hand: an admin). False when there is none the
    /// caller may see; <see cref="NotPermittedException"/> is not thrown to a user who cannot see it either way.
    /// </summary>
    public async Task<bool> DeleteAsync(Caller caller, string path, CancellationToken cancellationToken)
    {
        var full = guard.Resolve(path, data.Outputs);
        if (!File.Exists(full) || FileKind.NotRegular(full) is not null) return false;
        var relative = Relative(full);
        var item = await ownership.FindAsync(StorageArea.Outputs, relative, cancellationToken);
        if (!caller.IsAdmin && item?.OwnerId != caller.UserId) return false;
        Ownership.RequireChange(caller, item, relative);
        File.Delete(full);
        await ownership.ForgetAsync(StorageArea.Outputs, relative, cancellationToken);
        return true;
    }

    /// <summary>
    /// An output's A1111 PNG info (its <c>parameters</c> text, read by the Imaging layer's PNG reader); "" when it has
    /// none; null when there is no such output the caller may see.
    /// </summary>
    public async Task<string?> ParametersAsync(Caller caller, string path, CancellationToken cancellationToken)
    {
        if (await OpenAsync(caller, path, cancellationToken) is not { } file) return null;
        var bytes = await File.ReadAllBytesAsync(file.FullPath, cancellationToken);
        return ImageCodec.Decode(bytes, source: path).Text.GetValueOrDefault(ImageCodec.ParametersKey) ?? "";
    }

    private string Relative(string full) => System.IO.Path.GetRelativePath(data.Outputs, full).Replace('\\', '/');

    private static int NextNumber(string folder) =>
        1 + Directory.EnumerateFiles(folder).Select(System.IO.Path.GetFileName).OfType<string>()
            .Select(n => NumberPattern().Match(n)).Where(m => m.Success)
            .Select(m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture)).DefaultIfEmpty(0).Max();

    [GeneratedRegex(@"^\d{4}-\d{2}-\d{2}$")]
    private static partial Regex DayPattern();

    [GeneratedRegex(@"^(\d{5,9})(?:-|\.)")]
    private static partial Regex NumberPattern();
}
