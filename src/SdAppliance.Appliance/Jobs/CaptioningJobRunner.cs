using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Microsoft.EntityFrameworkCore;
using SdAppliance.Appliance.Accounts;
using SdAppliance.Appliance.Catalog;
using SdAppliance.Appliance.Persistence;
using SdAppliance.Appliance.Storage;
using SdAppliance.Formats;
using SdAppliance.Onnx.Runtime;
using SdAppliance.Onnx.Tagging;

namespace SdAppliance.Appliance.Jobs;

/// <summary>
/// What <c>sdapp caption</c> does, as a job: <c>{"dataset", "tagger", "threshold"?, "character_threshold"?,
/// "undesired_tags"?, "mode"?, "keep_underscores"?, "rating_tag"?}</c>, the dataset and the tagger (of
/// <see cref="TaggerCatalog"/>) by name; <c>mode</c> is <c>skip</c> (the default: images with a caption are left
/// alone), <c>append</c> or <c>overwrite</c>. Captions are <c>.txt</c> files beside the images, as the appliance's datasets
/// keep them. Its owner must be one who may change the dataset, checked again when it starts. ONNX Runtime runs the
/// tagger on the CPU, beside the device jobs: a tagger is a small image classifier. The result lists the captions
/// written and the images skipped with their reasons.
/// </summary>
public sealed class CaptioningJobRunner(DataFolder data, TaggerCatalog taggers, Ownership ownership, IDbContextFactory<ApplianceDb> databases) : IJobRunner
{
    public JobKind Kind => JobKind.Captioning;

    public bool UsesDevice => false;

    /// <summary>The request as JSON spells it.</summary>
    public sealed record Request(string? Dataset, string? Tagger, double? Threshold, double? CharacterThreshold, JsonElement? UndesiredTags,
        string? Mode, bool KeepUnderscores, bool RatingTag);

    /// <summary>The modes as requests name them.</summary>
    public static IReadOnlyDictionary<string, CaptionMode> Modes { get; } = new Dictionary<string, CaptionMode>(StringComparer.Ordinal)
    {
        ["skip"] = CaptionMode.Skip, ["append"] = CaptionMode.Append, ["overwrite"] = CaptionMode.Overwrite,
    };

    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, NumberHandling = JsonNumberHandling.Strict };

    public void Check(JsonElement request) => Parse(request);

    public async Task<JsonElement?> RunAsync(JobContext context, CancellationToken cancellationToken)
    {
        var (name, dataset, taggerFolder, options) = Parse(context.Job.Request);
        if (!Directory.Exists(dataset)) throw new DatasetNotFoundException(name);
        // Checked as its owner now: they may have lost the right since it was queued, or queued it through the bare jobs route.
        var owner = new Caller(context.Job.OwnerId, await IsAdminAsync(context.Job.OwnerId, cancellationToken));
        Ownership.RequireChange(owner, await ownership.FindAsync(StorageArea.Datasets, name, cancellationToken), name);
        // Tagging is synchronous: it runs on a thread of its own and checks the token between images.
        return await Task.Factory.StartNew(() => Caption(context, name, dataset, taggerFolder, options, cancellationToken),
            cancellationToken, TaskCreationOptions.LongRunning, TaskScheduler.Default);
    }

    /// <summary>The request's dataset folder, tagger folder and options, checked.</summary>
    private (string Name, string Dataset, string Tagger, CaptionOptions Options) Parse(JsonElement json)
    {
        Request request;
        try
        {
            request = json.Deserialize<Request>(Json)!;
        }
        catch (JsonException e)
        {
            throw new UserInputException(e.Path is { Length: > 2 } path ? path[2..] : "request", $"cannot be read: {e.Message}",
                "send {\"dataset\": NAME, \"tagger\": NAME, \"threshold\": 0.35, \"mode\": \"skip\"...}");
        }
        var name = PathGuard.Name(request.Dataset ?? throw new UserInputException("dataset", "missing", "name the dataset to caption"), "dataset");
        var tagger = taggers.Find(request.Tagger ?? throw new UserInputException("tagger", "missing", "name one of the taggers in models/taggers/"));
        var mode = request.Mode is null ? CaptionMode.Skip
            : Modes.TryGetValue(request.Mode, out var m) ? m
            : throw new UserInputException("mode", $"'{request.Mode}' is not a caption mode", "skip, append or overwrite");
        var options = new CaptionOptions
        {
            Threshold = request.Threshold ?? CaptionOptions.DefaultThreshold,
            CharacterThreshold = request.CharacterThreshold ?? CaptionOptions.DefaultCharacterThreshold,
            UndesiredTags = UndesiredTags(request.UndesiredTags),
            Mode = mode,
            KeepUnderscores = request.KeepUnderscores,
            RatingTag = request.RatingTag,
        };
        options.Validate();
        return (name, Path.Combine(data.Datasets, name), tagger, options);
    }

    /// <summary>Undesired tags as kohya's comma-separated text or as a JSON list of tags.</summary>
    private static IReadOnlyList<string> UndesiredTags(JsonElement? value) => value switch
    {
        null or { ValueKind: JsonValueKind.Null } => [],
        { ValueKind: JsonValueKind.String } text => CaptionOptions.ParseTagList(text.GetString()),
        { ValueKind: JsonValueKind.Array } list when list.EnumerateArray().All(t => t.ValueKind == JsonValueKind.String) =>
            [.. list.EnumerateArray().SelectMany(t => CaptionOptions.ParseTagList(t.GetString()))],
        _ => throw new UserInputException("undesired_tags", "must be comma-separated text or a list of tags", "such as \"simple_background, white_background\""),
    };

    private static JsonElement? Caption(JobContext context, string name, string dataset, string taggerFolder, CaptionOptions options, CancellationToken cancellationToken)
    {
        context.Publish(new JobEvent(0, default, JobEventTypes.Log) { Message = $"captioning {name} with the tagger {Path.GetFileName(taggerFolder)}" });
        using var tagger = WdTagger.Load(taggerFolder, new OnnxRuntimeOptions { Provider = OnnxProvider.Cpu });
        var progress = new Progress(p => context.Publish(new JobEvent(0, default, JobEventTypes.Step) { Step = p.Done, TotalSteps = p.Total }));
        var result = DatasetCaptioner.Caption(tagger, dataset, options, progress, cancellationToken);
        foreach (var skipped in result.Skipped)
            context.Publish(new JobEvent(0, default, JobEventTypes.Log) { Message = $"skipped {skipped.Image}: {skipped.Reason}" });
        return JsonSerializer.SerializeToElement(new JsonObject
        {
            ["dataset"] = name,
            ["tagger"] = Path.GetFileName(taggerFolder),
            ["mode"] = Modes.First(m => m.Value == options.Mode).Key,
            ["images"] = result.Total,
            ["written"] = new JsonArray([.. result.Written.Select(w => (JsonNode)new JsonObject { ["image"] = w.Image, ["caption"] = w.Caption })]),
            ["skipped"] = new JsonArray([.. result.Skipped.Select(s => (JsonNode)new JsonObject { ["image"] = s.Image, ["reason"] = s.Reason })]),
        });
    }

    private async Task<bool> IsAdminAsync(string userId, CancellationToken cancellationToken)
    {
        await using var db = await databases.CreateDbContextAsync(cancellationToken);
        return await db.UserRoles.AnyAsync(r => r.UserId == userId && r.RoleId == Roles.Admin, cancellationToken);
    }

    private sealed class Progress(Action<CaptioningProgress> report) : IProgress<CaptioningProgress>
    {
        public void Report(CaptioningProgress value) => report(value);
    }
}
