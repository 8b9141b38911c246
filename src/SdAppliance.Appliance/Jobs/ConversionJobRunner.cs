using System.Text.Json;
using System.Text.Json.Nodes;
using SdAppliance.Formats;
using SdAppliance.Models.Conversion;

using SdAppliance.Appliance.Storage;

namespace SdAppliance.Appliance.Jobs;

/// <summary>
/// What <c>sdapp convert</c> does, as a job: <c>{"input", "output", "to"?, "half"?, "config"?, "prediction_type"?}</c>,
/// paths inside the data folder; a diffusers folder to one .safetensors/.ckpt file and back. No engine work: it runs
/// beside the device jobs.
/// </summary>
public sealed class ConversionJobRunner(PathGuard paths) : IJobRunner
{
    public JobKind Kind => JobKind.Conversion;

    public bool UsesDevice => false;

    /// <summary>The request as JSON spells it.</summary>
    public sealed record Request(string? Input, string? Output, string? To, bool Half, string? Config, string? PredictionType);

    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public Task<JsonElement?> RunAsync(JobContext context, CancellationToken cancellationToken) =>
        Task.Factory.StartNew(() => Run(context, cancellationToken), cancellationToken, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    public void Check(JsonElement request) => Parse(request);

    /// <summary>The request's input, output and options, its paths resolved inside the data folder.</summary>
    private (string Input, string Output, ConversionOptions Options) Parse(JsonElement json)
    {
        Request request;
        try
        {
            request = json.Deserialize<Request>(Json)!;
        }
        catch (JsonException e)
        {
            throw new UserInputException("request", $"is not a conversion request: {e.Message}", "send {\"input\": PATH, \"output\": PATH, \"to\": \"safetensors\"...}");
        }
        var input = paths.ResolveRequestPath(request.Input ?? throw new UserInputException("input", "missing", "give the model to convert"), "input");
        var output = paths.ResolveRequestPath(request.Output ?? throw new UserInputException("output", "missing", "give the file or folder to write"), "output");
        var config = request.Config is null ? null : paths.ResolveRequestPath(request.Config, "config");
        return (input, output, new ConversionOptions(ModelConverter.ParseFormat(request.To, "to"), request.Half, config, request.PredictionType, [paths.Data.FullPath]));
    }

    private JsonElement? Run(JobContext context, CancellationToken cancellationToken)
    {
        var (input, output, conversion) = Parse(context.Job.Request);
        var last = -1;
        var progress = new Progress(p =>
        {
            // A step event per percent: a large model has thousands of tensors.
            var percent = p.Done * 100 / Math.Max(p.Total, 1);
            if (percent == last) return;
            last = percent;
            context.Publish(new JobEvent(0, default, JobEventTypes.Step) { Step = p.Done, TotalSteps = p.Total });
        });
        var result = ModelConverter.Convert(input, output, conversion, progress, cancellationToken);
        foreach (var warning in result.Warnings)
            context.Publish(new JobEvent(0, default, JobEventTypes.Log) { Message = "warning: " + warning });
        return JsonSerializer.SerializeToElement(new JsonObject
        {
            ["output"] = paths.Data.Relative(result.OutputPath),
            ["format"] = ModelConverter.FormatNames.First(f => f.Value == result.Format).Key,
            ["family"] = result.Family.ToString(),
            ["tensors"] = result.TensorCount,
            ["warnings"] = new JsonArray([.. result.Warnings.Select(w => (JsonNode)w)]),
        });
    }

    private sealed class Progress(Action<ConversionProgress> report) : IProgress<ConversionProgress>
    {
        public void Report(ConversionProgress value) => report(value);
    }
}
