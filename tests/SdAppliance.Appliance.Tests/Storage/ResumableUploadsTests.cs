using SdAppliance.Appliance.Catalog;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Storage;
using SdAppliance.Formats;
using static SdAppliance.Appliance.Tests.Storage.StorageFixture;

namespace SdAppliance.Appliance.Tests.Storage;

public sealed class ResumableUploadsTests : IDisposable
{
    private readonly StorageFixture storage = new();
    private readonly ManualClock clock = new();
    private readonly CancellationToken none = CancellationToken.None;
    private readonly byte[] lora;

    public ResumableUploadsTests()
    {
        var file = Path.Combine(storage.Root, "ink.safetensors");
        WriteLora(file);
        lora = File.ReadAllBytes(file);
    }

    private ResumableUploads Uploads(long maxModelBytes = 16L << 30) =>
        new(storage.Catalog, new ApplianceOptions { DataFolder = storage.Data.FullPath, Limits = new StorageLimits { MaxModelBytes = maxModelBytes } }, clock);

    private Task<UploadStatus?> ChunkAsync(ResumableUploads uploads, UploadStatus session, int from, int to, Caller? caller = null, long? total = null) =>
        uploads.WriteAsync(caller ?? Alice, session.Id, from, total ?? lora.Length, new MemoryStream(lora[from..to]), none);

    // What is left in the LoRA folder besides imported files: staging folders of uploads.
    private string[] Hidden() => Directory.Exists(storage.Data.Loras)
        ? [.. Directory.EnumerateFileSystemEntries(storage.Data.Loras).Select(Path.GetFileName).Where(n => n!.StartsWith('.')).Select(n => n!)]
        : [];

    [Fact]
    public async Task Chunks_out_of_order_are_refused_with_the_offset_duplicates_are_skipped_and_the_last_byte_imports_the_file()
    {
        var uploads = Uploads();
        var session = uploads.Start(Alice, ModelKind.Lora, "ink.safetensors", lora.Length, isPrivate: true);
        Assert.Equal(0, session.ReceivedBytes);
        Assert.Single(Hidden());

        Assert.Equal(100, (await ChunkAsync(uploads, session, 0, 100))!.ReceivedBytes);
        // A chunk after a gap: nothing written, the answer says where to continue.
        var gap = await Assert.ThrowsAsync<UploadOffsetException>(() => ChunkAsync(uploads, session, 200, 300));
        Assert.Equal(100, gap.ExpectedOffset);
        Assert.Equal(100, uploads.Find(Alice, session.Id)!.ReceivedBytes);
        // Overlapping and repeated chunks (an answer lost, the chunk sent again) add only what is new.
        Assert.Equal(150, (await ChunkAsync(uploads, session, 50, 150))!.ReceivedBytes);
        Assert.Equal(150, (await ChunkAsync(uploads, session, 0, 100))!.ReceivedBytes);
        Assert.False(uploads.Find(Alice, session.Id)!.IsComplete);

        var done = await ChunkAsync(uploads, session, 150, lora.Length);
        Assert.True(done!.IsComplete);
        Assert.Equal(lora.Length, done.ReceivedBytes);
        var imported = Path.Combine(storage.Data.Loras, "ink.safetensors");
        Assert.Equal(lora, File.ReadAllBytes(imported));
        Assert.Equal("ink", done.Model!.Name);
        Assert.True(done.Model.IsPrivate);
        Assert.Empty(Hidden());
        // Listed as any import: Alice's and private.
        Assert.Single(await storage.Catalog.ListAsync(Alice, ModelKind.Lora, none));
        Assert.Empty(await storage.Catalog.ListAsync(Bob, ModelKind.Lora, none));
        // A last chunk sent again after its answer was lost answers the same.
        Assert.True((await ChunkAsync(uploads, session, 150, lora.Length))!.IsComplete);
    }

    [Fact]
    public async Task A_connection_dropped_mid_chunk_keeps_what_arrived_and_the_upload_resumes_from_the_servers_offset()
    {
        var uploads = Uploads();
        var session = uploads.Start(Alice, ModelKind.Lora, "ink.safetensors", lora.Length, isPrivate: false);

        await Assert.ThrowsAsync<IOException>(() => uploads.WriteAsync(Alice, session.Id, 0, lora.Length, new DroppingStream(lora, dropAfter: 70), none));
        var offset = uploads.Find(Alice, session.Id)!.ReceivedBytes;
        Assert.Equal(70, offset);

        var done = await ChunkAsync(uploads, session, (int)offset, lora.Length);
        Assert.True(done!.IsComplete);
        Assert.Equal(lora, File.ReadAllBytes(Path.Combine(storage.Data.Loras, "ink.safetensors")));
    }

    [Fact]
    public async Task A_size_other_than_announced_is_refused_naming_the_file()
    {
        var uploads = Uploads();
        var session = uploads.Start(Alice, ModelKind.Lora, "ink.safetensors", lora.Length, isPrivate: false);

        var total = await Assert.ThrowsAsync<UserInputException>(() => ChunkAsync(uploads, session, 0, 10, total: lora.Length + 1));
        Assert.Equal("ink.safetensors", total.Subject);
        Assert.Contains($"{lora.Length:N0}", total.Message, StringComparison.Ordinal);

        // More bytes than announced: the chunk goes past the end.
        var more = await Assert.ThrowsAsync<UserInputException>(() =>
            uploads.WriteAsync(Alice, session.Id, 0, null, new MemoryStream([.. lora, 1, 2, 3]), none));
        Assert.Equal("ink.safetensors", more.Subject);
        Assert.Contains("more bytes than", more.Message, StringComparison.Ordinal);
        Assert.False(File.Exists(Path.Combine(storage.Data.Loras, "ink.safetensors")));
    }

    [Fact]
    public void A_file_over_the_limit_an_empty_one_and_a_wrong_name_are_refused_before_any_byte()
    {
        var uploads = Uploads(maxModelBytes: 1000);
        var big = Assert.Throws<UserInputException>(() => uploads.Start(Alice, ModelKind.Checkpoint, "huge.safetensors", 1001, isPrivate: false));
        Assert.Equal("huge.safetensors", big.Subject);
        Assert.Contains("MaxModelBytes", big.Message, StringComparison.Ordinal);
        Assert.Equal("huge.safetensors", Assert.Throws<UserInputException>(() => uploads.Start(Alice, ModelKind.Checkpoint, "huge.safetensors", 0, isPrivate: false)).Subject);
        var extension = Assert.Throws<UserInputException>(() => uploads.Start(Alice, ModelKind.Checkpoint, "notes.txt", 10, isPrivate: false));
        Assert.Equal("file_name", extension.Subject);
        Assert.Contains("'notes.txt'", extension.Message, StringComparison.Ordinal);
        Assert.Throws<UserInputException>(() => uploads.Start(Alice, ModelKind.Checkpoint, "../up.safetensors", 10, isPrivate: false));
        Assert.False(Directory.Exists(storage.Data.Models) && Directory.EnumerateFileSystemEntries(storage.Data.Models, ".*").Any());
    }

    [Fact]
    public async Task A_file_that_is_not_a_model_is_refused_at_its_last_byte_naming_the_file_and_nothing_stays()
    {
        var uploads = Uploads();
        var junk = "this is not a safetensors file at all"u8.ToArray();
        var session = uploads.Start(Alice, ModelKind.Lora, "fake.safetensors", junk.Length, isPrivate: false);

        var refused = await Assert.ThrowsAsync<UserInputException>(() => uploads.WriteAsync(Alice, session.Id, 0, junk.Length, new MemoryStream(junk), none));
        Assert.Equal("fake.safetensors", refused.Subject);
        Assert.Contains("not a safetensors file", refused.Message, StringComparison.Ordinal);
        Assert.Null(uploads.Find(Alice, session.Id));
        Assert.Empty(Hidden());
        Assert.Empty(await storage.Catalog.ListAsync(Alice, ModelKind.Lora, none));
    }

    [Fact]
    public async Task An_upload_is_its_owners_only_and_expires_when_left()
    {
        var uploads = Uploads();
        var session = uploads.Start(Alice, ModelKind.Lora, "ink.safetensors", lora.Length, isPrivate: false);
        Assert.Null(uploads.Find(Bob, session.Id));
        Assert.Null(await ChunkAsync(uploads, session, 0, 10, caller: Bob));
        Assert.False(uploads.Cancel(Bob, session.Id));
        Assert.Equal(0, uploads.Find(Alice, session.Id)!.ReceivedBytes);

        await ChunkAsync(uploads, session, 0, 10);
        clock.Advance(ResumableUploads.Expiry + TimeSpan.FromMinutes(1));
        var other = uploads.Start(Alice, ModelKind.Lora, "other.safetensors", lora.Length, isPrivate: false);
        Assert.Null(uploads.Find(Alice, session.Id));
        Assert.Single(Hidden());  // the new one's
        Assert.True(uploads.Cancel(Alice, other.Id));
        Assert.Empty(Hidden());
    }

    public void Dispose() => storage.Dispose();

    private sealed class ManualClock : TimeProvider
    {
        private DateTimeOffset now = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

        public override DateTimeOffset GetUtcNow() => now;

        public void Advance(TimeSpan by) => now += by;
    }

    /// <summary>A request body whose connection drops after <c>dropAfter</c> bytes.</summary>
    private sealed class DroppingStream(byte[] bytes, int dropAfter) : Stream
    {
        private int position;

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => position; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override int Read(byte[] buffer, int offset, int count)
        {
            if (position >= dropAfter) throw new IOException("the connection was reset");
            var n = Math.Min(Math.Min(count, dropAfter - position), 30);
            Array.Copy(bytes, position, buffer, offset, n);
            position += n;
            return n;
        }
    }
}
