using System.Collections.Concurrent;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Threading.Channels;

namespace SdAppliance.Appliance.Jobs;

/// <summary>
/// The events of every job: appended to its folder's <c>events.jsonl</c> (one JSON line each, so a page opened later, or
/// after a restart, replays the history) and handed to the live subscribers (a channel each). A torn last line, left
/// by a kill, is skipped on read and closed off before the next append.
/// </summary>
internal sealed class JobEventLog
{
    public const string FileName = "events.jsonl";

    internal static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
        // A loss can be NaN; the line must still be written and read back.
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    private readonly ConcurrentDictionary<Guid, EventStream> streams = new();

    /// <summary>One job's events; its lock also orders the job's state changes against new subscriptions.</summary>
    internal sealed class EventStream(string file)
    {
        public string File { get; } = file;
        public SemaphoreSlim Lock { get; } = new(1, 1);
        public long LastSequence { get; set; } = -1;
        public JobEvent? LastStep { get; set; }
        public List<Channel<JobEvent>> Subscribers { get; } = [];
    }

    public EventStream Of(Guid job, string folder) => streams.GetOrAdd(job, _ => new EventStream(Path.Combine(folder, FileName)));

    /// <summary>Appends <paramref name="template"/> with the next sequence number and the time, and hands it to the subscribers.</summary>
    public JobEvent Append(EventStream stream, JobEvent template)
    {
        lock (stream)
        {
            if (stream.LastSequence < 0) stream.LastSequence = Read(stream.File).LastOrDefault()?.Sequence ?? 0;
            var e = template with { Sequence = stream.LastSequence + 1, TimeUtc = DateTime.UtcNow };
            Directory.CreateDirectory(Path.GetDirectoryName(stream.File)!);
            using (var file = new FileStream(stream.File, FileMode.Append, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete))
            {
                var line = JsonSerializer.Serialize(e, Json) + "\n";
                if (file.Length > 0 && !EndsWithNewline(stream.File)) line = "\n" + line;  // close off a torn line
                file.Write(Encoding.UTF8.GetBytes(line));
                file.Flush(flushToDisk: false);
            }
            stream.LastSequence = e.Sequence;
            if (e.Type == JobEventTypes.Step) stream.LastStep = e;
            var terminal = e.Type == JobEventTypes.State && e.State is { } s && JobStates.IsFinal(s);
            foreach (var subscriber in stream.Subscribers)
            {
                subscriber.Writer.TryWrite(e);
                if (terminal) subscriber.Writer.TryComplete();
            }
            if (terminal) stream.Subscribers.Clear();
            return e;
        }
    }

    /// <summary>A live subscription: events appended from now on; the caller reads the file for the ones before <c>after</c>.</summary>
    public (Channel<JobEvent> Channel, long After) Subscribe(EventStream stream)
    {
        lock (stream)
        {
            if (stream.LastSequence < 0) stream.LastSequence = Read(stream.File).LastOrDefault()?.Sequence ?? 0;
            var channel = Channel.CreateUnbounded<JobEvent>(new UnboundedChannelOptions { SingleReader = true });
            stream.Subscribers.Add(channel);
            return (channel, stream.LastSequence);
        }
    }

    public void Unsubscribe(EventStream stream, Channel<JobEvent> channel)
    {
        lock (stream) stream.Subscribers.Remove(channel);
    }

    /// <summary>The events in <paramref name="file"/>, in order; a line that does not parse (a torn write) is skipped.</summary>
    public static IEnumerable<JobEvent> Read(string file)
    {
        if (!File.Exists(file)) yield break;
        using var reader = new StreamReader(new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete));
        while (reader.ReadLine() is { } line)
        {
            if (line.Length == 0) continue;
            JobEvent? e;
            try
            {
                e = JsonSerializer.Deserialize<JobEvent>(line, Json);
            }
            catch (JsonException)
            {
                continue;
            }
            if (e is not null) yield return e;
        }
    }

    private static bool EndsWithNewline(string file)
    {
        using var read = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        read.Seek(-1, SeekOrigin.End);
        return read.ReadByte() == '\n';
    }
}

/// <summary>The <see cref="JobEvent.Type"/> values.</summary>
public static class JobEventTypes
{
    /// <summary>The job changed state (<see cref="JobEvent.State"/>; <see cref="JobEvent.Message"/> says why when it failed or was re-queued).</summary>
    public const string State = "state";

    /// <summary>A step with its figures (training: loss, lr, it/s, ETA, memory).</summary>
    public const string Step = "step";

    /// <summary>A new image (<see cref="JobEvent.Image"/>).</summary>
    public const string Image = "image";

    /// <summary>A log line (<see cref="JobEvent.Message"/>).</summary>
    public const string Log = "log";

    /// <summary>What a running generation looks like so far (<see cref="JobEvent.Image"/>, a PNG in the job's folder; <see cref="JobEvent.Step"/>).</summary>
    public const string Preview = "preview";
}

public static class JobStates
{
    /// <summary>Completed, failed or cancelled: nothing happens to it any more (unless a training job is resumed).</summary>
    public static bool IsFinal(JobState state) => state is JobState.Completed or JobState.Failed or JobState.Cancelled;
}
