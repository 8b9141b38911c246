using System.Collections.Concurrent;
using SdAppliance.Appliance.Catalog;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Formats;

namespace SdAppliance.Appliance.Storage;

/// <summary>Where an upload stands: how many bytes the server has (the offset to continue from) and, once complete, the imported model.</summary>
public sealed record UploadStatus(string Id, ModelKind Kind, string FileName, long SizeBytes, long ReceivedBytes, ModelEntry? Model)
{
    public bool IsComplete => Model is not null;
}

/// <summary>
/// A chunk that does not start where the upload stands (a chunk after a gap): nothing of it is written, and the client
/// continues from <see cref="ExpectedOffset"/>.
/// </summary>
public sealed class UploadOffsetException(string fileName, long offset, long expectedOffset)
    : UserInputException(fileName, $"the chunk starts at byte {offset:N0} but the server has {expectedOffset:N0} bytes of it", $"send the bytes from {expectedOffset:N0} on")
{
    public long ExpectedOffset { get; } = expectedOffset;
}

/// <summary>
/// Uploads of model files too large for one request, in chunks, resumable after a dropped connection: a session (who,
/// what kind, the file name, its announced size) writes into a hidden staging file in its kind's folder; each chunk says
/// where it starts (an HTTP <c>Content-Range</c>), a chunk that repeats bytes the server has is written from where it
/// stands, a chunk after a gap is refused with the offset to continue from, and the bytes of a chunk cut off midway are
/// kept. The last byte completes it: the size is checked, then the catalog checks the content and renames it into place
/// (<see cref="ModelCatalog.ImportStagedAsync"/>). Sessions live in memory: a restart ends them, and LeftoverCleanup
/// removes their staging folders (<c>.NAME.ID.tmp</c>); a session idle longer than <see cref="Expiry"/> is removed.
/// </summary>
public sealed class ResumableUploads(ModelCatalog catalog, ApplianceOptions options, TimeProvider? clock = null)
{
    private readonly TimeProvider time = clock ?? TimeProvider.System;

    /// <summary>How long a session waits for its next chunk before it and its bytes are removed.</summary>
    public static readonly TimeSpan Expiry = TimeSpan.FromHours(24);

    private readonly ConcurrentDictionary<string, Session> sessions = new(StringComparer.Ordinal);

    /// <summary>
    /// Starts an upload of <paramref name="fileName"/> (<paramref name="sizeBytes"/> bytes) as a model of <paramref name="kind"/>:
    /// the name, extension and size are checked before any byte is sent.
    /// </summary>
    public UploadStatus Start(Caller caller, ModelKind kind, string? fileName, long sizeBytes, bool isPrivate)
    {
        ArgumentNullException.ThrowIfNull(caller);
        RemoveExpired();
        var name = catalog.CheckImportName(kind, fileName ?? "", "file_name");
        var limit = options.Limits.MaxModelBytes;
        if (sizeBytes <= 0)
            throw new UserInputException(name, "is empty", "choose the model file itself");
        if (sizeBytes > limit)
            throw new UserInputException(name, $"is {sizeBytes:N0} bytes, over {limit:N0}, the most a model file may have (StorageLimits.MaxModelBytes)",
                "ask the administrator to raise the limit");
        var (folder, file) = catalog.StageUpload(kind, name);
        var session = new Session(Guid.NewGuid().ToString("N"), caller.UserId, kind, name, sizeBytes, isPrivate, folder, file) { Touched = time.GetUtcNow() };
        File.Create(file).Dispose();
        sessions[session.Id] = session;
        return session.Status();
    }

    /// <summary>Where the caller's upload <paramref name="id"/> stands (the offset to send from); null when there is none of theirs.</summary>
    public UploadStatus? Find(Caller caller, string id) => Get(caller, id)?.Status();

    /// <summary>
    /// Writes a chunk that starts at byte <paramref name="offset"/> of the file; <paramref name="totalBytes"/>, when the
    /// client says it, must be the size the upload was started with. The bytes the server already has are skipped; bytes
    /// past the announced size refuse the chunk (the file is larger than announced). When the chunk brings the last byte,
    /// the file is imported; a file the catalog refuses ends the upload with the catalog's error, which names the file.
    /// Null when the caller has no such upload.
    /// </summary>
    public async Task<UploadStatus?> WriteAsync(Caller caller, string id, long offset, long? totalBytes, Stream content, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(content);
        if (Get(caller, id) is not { } session) return null;
        await session.Lock.WaitAsync(cancellationToken);
        try
        {
            if (session.Model is not null) return session.Status();
            if (totalBytes is { } total && total != session.Size)
                throw new UserInputException(session.Name, $"the chunk says the file has {total:N0} bytes, the upload was started for {session.Size:N0}",
                    "start the upload again for the file you chose");
            if (offset < 0) throw new UserInputException(session.Name, $"the chunk starts at byte {offset:N0}", "send a Content-Range from 0 on");
            if (offset > session.Received) throw new UploadOffsetException(session.Name, offset, session.Received);
            await AppendAsync(session, offset, content, cancellationToken);
            session.Touched = time.GetUtcNow();
            if (session.Received < session.Size) return session.Status();
            return await CompleteAsync(caller, session, cancellationToken);
        }
        finally
        {
            session.Lock.Release();
        }
    }

    /// <summary>Ends the caller's upload and removes its bytes; false when there is none of theirs.</summary>
    public bool Cancel(Caller caller, string id)
    {
        if (Get(caller, id) is not { } session) return false;
        Remove(session);
        return true;
    }

    private Session? Get(Caller caller, string id)
    {
        ArgumentNullException.ThrowIfNull(caller);
        return sessions.TryGetValue(id ?? "", out var session) && session.OwnerId == caller.UserId ? session : null;
    }

    private async Task AppendAsync(Session session, long offset, Stream content, CancellationToken cancellationToken)
    {
        var buffer = new byte[1 << 20];
        // What the server has of this chunk already (a chunk sent again after its answer was lost) is read past.
        var skip = session.Received - offset;
        await using var file = new FileStream(session.File, FileMode.Open, FileAccess.Write, FileShare.None, 1 << 16, useAsync: true);
        file.Seek(session.Received, SeekOrigin.Begin);
        // A connection dropped mid-chunk ends the read with an error: the bytes that arrived are kept (Received counts
        // what was written), so the client continues from them.
        int read;
        while ((read = await content.ReadAsync(buffer, cancellationToken)) > 0)
        {
            var start = (int)Math.Min(skip, read);
            skip -= start;
            var count = read - start;
            if (count == 0) continue;
            if (session.Received + count > session.Size)
                throw new UserInputException(session.Name, $"has more bytes than the {session.Size:N0} the upload was started for",
                    "start the upload again for the file you chose");
            await file.WriteAsync(buffer.AsMemory(start, count), cancellationToken);
            session.Received += count;
        }
    }

    private async Task<UploadStatus> CompleteAsync(Caller caller, Session session, CancellationToken cancellationToken)
    {
        try
        {
            var length = new FileInfo(session.File).Length;
            if (length != session.Size)
                throw new UserInputException(session.Name, $"arrived with {length:N0} bytes, the upload was started for {session.Size:N0}", "upload it again");
            session.Model = await catalog.ImportStagedAsync(caller, session.Kind, session.Name, session.File, session.IsPrivate, cancellationToken);
            return session.Status();
        }
        finally
        {
            // Imported or refused, the upload is over; its status stays answerable until it expires.
            TryDeleteFolder(session.Folder);
            if (session.Model is null) sessions.TryRemove(session.Id, out _);
        }
    }

    private void RemoveExpired()
    {
        var now = time.GetUtcNow();
        foreach (var session in sessions.Values.Where(s => now - s.Touched > Expiry))
            Remove(session);
    }

    private void Remove(Session session)
    {
        sessions.TryRemove(session.Id, out _);
        TryDeleteFolder(session.Folder);
    }

    private static void TryDeleteFolder(string folder)
    {
        try
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
        catch (IOException)
        {
            // A chunk still writing; LeftoverCleanup removes it at the next start.
        }
    }

    private sealed class Session(string id, string ownerId, ModelKind kind, string name, long size, bool isPrivate, string folder, string file)
    {
        public string Id { get; } = id;
        public string OwnerId { get; } = ownerId;
        public ModelKind Kind { get; } = kind;
        public string Name { get; } = name;
        public long Size { get; } = size;
        public bool IsPrivate { get; } = isPrivate;
        public string Folder { get; } = folder;
        public string File { get; } = file;
        public long Received { get; set; }
        public DateTimeOffset Touched { get; set; }
        public ModelEntry? Model { get; set; }
        public SemaphoreSlim Lock { get; } = new(1, 1);

        public UploadStatus Status() => new(Id, Kind, Name, Size, Received, Model);
    }
}
