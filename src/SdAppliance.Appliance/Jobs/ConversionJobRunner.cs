using System.Text.Json;
using System.Text.Json.Nodes;
using SdAppliance.Formats;
using SdAppliance.Models.Adapters;
using SdAppliance.Models.Conversion;
using SdAppliance.Models.Loading;
using SdAppliance.Onnx.Export;
using SdAppliance.Training.Exports;

using SdAppliance.Appliance.Storage;

namespace SdAppliance.Appliance.Jobs;

/// <summary>
/// What <c>sdapp convert</c> does, as a job: <c>{"input", "output", "to"?, "half"?, "config"?, "prediction_type"?}</c>,
/// paths inside the data folder; a diffusers folder to one .safetensors/.ckpt file and back. No engine work: it runs
/// beside the device jobs.
/// <para>
/// With <c>"export"</c> (<see cref="Exports"/>) it makes a file to download from a model of the catalog, written into the
/// job's own folder unless <c>output</c> says where: <c>fp16</c> (one float16 <c>.safetensors</c>), <c>diffusers</c> (a
/// diffusers folder), <c>merged</c> (the LoRA <c>lora</c> merged into the base model at <c>weight</c>, one
/// <c>.safetensors</c>), <c>a1111_embedding</c> (an embedding as A1111's <c>.pt</c>). Each is the existing code's
/// conversion (ModelConverter, ModelExport, EmbeddingExport); merging loads the model on the CPU.
/// </para>
/// <para>
/// <c>onnx</c> (<see cref="OnnxPipelineExporter"/>, the model loaded on the CPU) writes the ONNX pipeline folder into
/// <c>models/</c>, where the catalog lists it as a base model, owned by the job's owner (<c>private</c> as its source):
/// <c>layout</c> (<c>optimum</c>, <c>diffusers</c>), <c>half</c> for float16, <c>attention</c> (<c>standard</c>,
/// <c>fused</c>), <c>loras</c> (<c>[{"path", "weight"}]</c>, merged) and <c>embeddings</c> (paths, baked in).
/// </para>
/// </summary>
public sealed class ConversionJobRunner(PathGuard paths, Ownership? ownership = null) : IJobRunner
{
    public JobKind Kind => JobKind.Conversion;

    public bool UsesDevice => false;

    /// <summary>The request as JSON spells it.</summary>
    public sealed record Request(string? Input, string? Output, string? To, bool Half, string? Config, string? PredictionType,
        string? Export = null, string? Lora = null, double? Weight = null,
        string? Layout = null, string? Attention = null, IReadOnlyList<LoraChoice>? Loras = null, IReadOnlyList<string>? Embeddings = null, bool Private = false);

    /// <summary>A LoRA of an ONNX export and its weight (both strengths).</summary>
    public sealed record LoraChoice(string? Path, double? Weight);

    /// <summary>The exports by name, with what each makes (the UI offers them by kind of model).</summary>
    public static IReadOnlyDictionary<string, string> Exports { get; } = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        [Fp16] = "one float16 .safetensors file (half the size)",
        [Diffusers] = "a diffusers folder (downloaded as a .zip)",
        [Merged] = "a LoRA merged into the base model, one .safetensors file",
        [A1111Embedding] = "the embedding as A1111's .pt",
        [Onnx] = "an ONNX pipeline folder (optimum's or diffusers' layout) in the base models, LoRAs merged",
    };

    public const string Fp16 = "fp16", Diffusers = "diffusers", Merged = "merged", A1111Embedding = "a1111_embedding", Onnx = "onnx";

    /// <summary>A parsed request: where it reads and writes (Output null: the job's folder), and what it does.</summary>
    private sealed record Plan(string Input, string? Output, ConversionOptions Options, string? Export, string? Lora, double Weight)
    {
        public OnnxPlan? Onnx { get; init; }
    }

    /// <summary>An ONNX export's options, LoRAs and embeddings (paths resolved), and whether its model is private.</summary>
    private sealed record OnnxPlan(OnnxExportOptions Options, IReadOnlyList<OnnxExportLora> Loras, IReadOnlyList<string> Embeddings, bool IsPrivate);

    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public Task<JsonElement?> RunAsync(JobContext context, CancellationToken cancellationToken) =>
        Task.Factory.StartNew(() => Run(context, cancellationToken), cancellationToken, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    public void Check(JsonElement request) => Parse(request);

    /// <summary>The request's input, output and options, its paths resolved inside the data folder.</summary>
    private Plan Parse(JsonElement json)
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
        if (request.Export is { } export && !Exports.ContainsKey(export))
            throw new UserInputException("export", $"'{export}' is not one of {string.Join(", ", Exports.Keys)}", "choose one of them");
        if (request.Export == Onnx && request.Output is not null)
            throw new UserInputException("output", "an ONNX export is written into models/ as a new base model", "leave output out");
        var output = request.Output is null && request.Export is not null ? null
            : paths.ResolveRequestPath(request.Output ?? throw new UserInputException("output", "missing", "give the file or folder to write"), "output");
        var config = request.Config is null ? null : paths.ResolveRequestPath(request.Config, "config");
        string? lora = null;
        if (request.Export == Merged)
            lora = paths.ResolveRequestPath(request.Lora ?? throw new UserInputException("lora", "missing", "choose the LoRA to merge into the model"), "lora");
        var weight = CheckWeight(request.Weight ?? 1.0, "weight");
        var to = request.Export switch
        {
            Fp16 or Merged => ModelFormat.Safetensors,
            Diffusers => ModelFormat.Diffusers,
            _ => ModelConverter.ParseFormat(request.To, "to"),
        };
        var half = request.Half || request.Export == Fp16;
        return new Plan(input, output, new ConversionOptions(to, half, config, request.PredictionType, [paths.Data.FullPath]), request.Export, lora, weight)
        {
            Onnx = request.Export == Onnx ? ParseOnnx(request) : null,
        };
    }

    private static double CheckWeight(double weight, string field) =>
        double.IsFinite(weight) && Math.Abs(weight) <= 10 ? weight
            : throw new UserInputException(field, $"{weight} is not a LoRA weight", "give a weight between -10 and 10, usually 1");

    private OnnxPlan ParseOnnx(Request request)
    {
        var options = new OnnxExportOptions
        {
            Layout = OnnxExportOptions.ParseLayout(request.Layout, "layout"),
            Precision = request.Half ? OnnxPrecision.Float16 : OnnxPrecision.Float32,
            Attention = OnnxExportOptions.ParseAttention(request.Attention, "attention"),
        };
        var loras = (request.Loras ?? []).Select(l =>
        {
            var weight = CheckWeight(l.Weight ?? 1.0, "loras");
            return new OnnxExportLora(paths.ResolveRequestPath(l.Path ?? throw new UserInputException("loras", "a LoRA without its path", "give each LoRA as {\"path\": PATH, \"weight\": W}"), "loras"), weight, weight);
        }).ToList();
        var embeddings = (request.Embeddings ?? []).Select(e => paths.ResolveRequestPath(e, "embeddings")).ToList();
        return new OnnxPlan(options, loras, embeddings, request.Private);
    }

    private JsonElement? Run(JobContext context, CancellationToken cancellationToken)
    {
        var plan = Parse(context.Job.Request);
        var last = -1;
        var progress = new Progress<ConversionProgress>(p =>
        {
            // A step event per percent: a large model has thousands of tensors.
            var percent = p.Done * 100 / Math.Max(p.Total, 1);
            if (percent == last) return;
            last = percent;
            context.Publish(new JobEvent(0, default, JobEventTypes.Step) { Step = p.Done, TotalSteps = p.Total });
        });
        if (plan.Onnx is { } onnx) return ExportOnnx(context, plan, onnx, cancellationToken);
        var output = plan.Output ?? Path.Combine(context.Folder, OutputName(plan));
        if (plan.Export is Merged or A1111Embedding) return Export(context, plan, output, cancellationToken);
        var result = ModelConverter.Convert(plan.Input, output, plan.Options, progress, cancellationToken);
        foreach (var warning in result.Warnings)
            context.Publish(new JobEvent(0, default, JobEventTypes.Log) { Message = "warning: " + warning });
        return JsonSerializer.SerializeToElement(new JsonObject
        {
            ["output"] = paths.Data.Relative(result.OutputPath),
            ["format"] = ModelConverter.FormatNames.First(f => f.Value == result.Format).Key,
            ["family"] = result.Family.ToString(),
            ["tensors"] = result.TensorCount,
            ["warnings"] = new JsonArray([.. result.Warnings.Select(w => (JsonNode)w)]),
            ["export"] = plan.Export,
        });
    }

    /// <summary>What the exports that are not a layout conversion write: a merged model, an embedding in A1111's layout.</summary>
    private JsonElement? Export(JobContext context, Plan plan, string output, CancellationToken cancellationToken)
    {
        var result = new JsonObject { ["output"] = paths.Data.Relative(output), ["export"] = plan.Export };
        if (plan.Export == A1111Embedding)
        {
            using var embedding = TextualInversionEmbedding.Load(plan.Input);
            EmbeddingExport.SaveA1111Pt(output, embedding, 0, null, null);
            result["format"] = "pt";
            result["vectors"] = embedding.VectorCount;
            return JsonSerializer.SerializeToElement(result);
        }
        context.Publish(new JobEvent(0, default, JobEventTypes.Log) { Message = $"loading {Path.GetFileName(plan.Input)} on the CPU" });
        using var model = ModelLoader.Load(plan.Input, new ModelLoadOptions(plan.Options.ConfigDirectory, plan.Options.PredictionType, SearchRoots: [paths.Data.FullPath]), cancellationToken);
        var merge = ModelExport.MergeLora(model, plan.Lora!, plan.Weight);
        if (merge.Unmatched.Count > 0)
            context.Publish(new JobEvent(0, default, JobEventTypes.Log) { Message = $"warning: {merge.Unmatched.Count} LoRA modules match no layer of the model" });
        cancellationToken.ThrowIfCancellationRequested();
        ModelExport.SaveSingleFile(model, output, plan.Options.Half);
        result["format"] = "safetensors";
        result["family"] = model.Family.ToString();
        result["merged_modules"] = merge.MergedModules;
        return JsonSerializer.SerializeToElement(result);
    }

    /// <summary>
    /// The ONNX export: the model loaded on the CPU and written as a new base model of the catalog (a free name after the
    /// model, its LoRAs, precision and layout), a step per part of the folder.
    /// </summary>
    private JsonElement? ExportOnnx(JobContext context, Plan plan, OnnxPlan onnx, CancellationToken cancellationToken)
    {
        context.Publish(new JobEvent(0, default, JobEventTypes.Log) { Message = $"loading {Path.GetFileName(Path.TrimEndingDirectorySeparator(plan.Input))} on the CPU" });
        using var model = ModelLoader.Load(plan.Input, new ModelLoadOptions(plan.Options.ConfigDirectory, plan.Options.PredictionType, SearchRoots: [paths.Data.FullPath]), cancellationToken);
        var output = FreeModelName(plan, onnx);
        var parts = OnnxPipelineExporter.Parts(model);
        var done = 0;
        var progress = new Progress<string>(part =>
        {
            context.Publish(new JobEvent(0, default, JobEventTypes.Log) { Message = $"writing {part}" });
            context.Publish(new JobEvent(0, default, JobEventTypes.Step) { Step = done++, TotalSteps = parts.Count });
        });
        var result = OnnxPipelineExporter.Export(model, output, onnx.Options, onnx.Loras, onnx.Embeddings, progress, cancellationToken);
        context.Publish(new JobEvent(0, default, JobEventTypes.Step) { Step = parts.Count, TotalSteps = parts.Count });
        foreach (var warning in result.Warnings)
            context.Publish(new JobEvent(0, default, JobEventTypes.Log) { Message = "warning: " + warning });
        var name = Path.GetFileName(output);
        // The job is the export's importer: its model is the owner's, private as the model it was made from.
        ownership?.RecordAsync(StorageArea.Models, name, context.Job.OwnerId, onnx.IsPrivate, CancellationToken.None).GetAwaiter().GetResult();
        return JsonSerializer.SerializeToElement(new JsonObject
        {
            ["output"] = paths.Data.Relative(output),
            ["model"] = name,
            ["export"] = Onnx,
            ["format"] = "onnx",
            ["layout"] = OnnxExportOptions.LayoutNames.First(l => l.Value == onnx.Options.Layout).Key,
            ["precision"] = onnx.Options.Precision == OnnxPrecision.Float16 ? "float16" : "float32",
            ["family"] = model.Family.ToString(),
            ["files"] = new JsonArray([.. result.Files.Select(f => (JsonNode)f)]),
            ["bytes"] = result.Bytes,
            ["warnings"] = new JsonArray([.. result.Warnings.Select(w => (JsonNode)w)]),
        });
    }

    /// <summary>A name in <c>models/</c> no model has: <c>NAME[-LORA...]-onnx[-fp16][-diffusers]</c>, then <c>-2</c>, <c>-3</c>...</summary>
    private string FreeModelName(Plan plan, OnnxPlan onnx)
    {
        var bare = Path.GetFileNameWithoutExtension(Path.TrimEndingDirectorySeparator(plan.Input));
        var name = bare + string.Concat(onnx.Loras.Select(l => "-" + Path.GetFileNameWithoutExtension(l.Path))) + "-onnx"
            + (onnx.Options.Precision == OnnxPrecision.Float16 ? "-fp16" : "") + (onnx.Options.Layout == OnnxLayout.Diffusers ? "-diffusers" : "");
        var candidate = Path.Combine(paths.Data.Models, name);
        for (var n = 2; Directory.Exists(candidate) || File.Exists(candidate); n++)
            candidate = Path.Combine(paths.Data.Models, $"{name}-{n}");
        return candidate;
    }

    /// <summary>An export's file or folder name in the job's folder, after its input (and LoRA).</summary>
    private static string OutputName(Plan plan)
    {
        var bare = Path.GetFileNameWithoutExtension(Path.TrimEndingDirectorySeparator(plan.Input));
        return plan.Export switch
        {
            Fp16 => $"{bare}-fp16.safetensors",
            Diffusers => $"{bare}-diffusers",
            Merged => $"{bare}-{Path.GetFileNameWithoutExtension(plan.Lora)}{(plan.Options.Half ? "-fp16" : "")}.safetensors",
            A1111Embedding => $"{bare}.pt",
            _ => bare + (plan.Options.To == ModelFormat.Ckpt ? ".ckpt" : plan.Options.To == ModelFormat.Diffusers ? "" : ".safetensors"),
        };
    }

    // On the caller's thread: System.Progress posts to the thread pool, so steps would come late and out of order.
    private sealed class Progress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
