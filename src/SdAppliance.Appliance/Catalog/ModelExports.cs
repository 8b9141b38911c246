using System.Text.Json;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Formats;
using SdAppliance.Onnx.Export;

namespace SdAppliance.Appliance.Catalog;

/// <summary>An export the catalog offers for a kind of model: its name in the job request and what it makes.</summary>
public sealed record ModelExportKind(string Name, string Label, string Makes);

/// <summary>An export job as the Models page lists it: the job, the model it was made from, and what it makes.</summary>
public sealed record ModelExportJob(JobView Job, string Export, string Source)
{
    /// <summary>An ONNX export is not downloaded from the job: it is a base model of the catalog (<see cref="Model"/>).</summary>
    public bool CanDownload => Job.State == JobState.Completed && Export != ConversionJobRunner.Onnx;

    /// <summary>The base model a finished export added to the catalog (its relative path); null for the exports that are downloads.</summary>
    public string? Model => Job.Result is { ValueKind: JsonValueKind.Object } result && result.TryGetProperty("model", out var m) && m.ValueKind == JsonValueKind.String
        ? m.GetString() : null;
}

/// <summary>A LoRA of an ONNX export, by its relative path in the catalog, at one weight (text encoder and UNet).</summary>
public sealed record ModelExportLora(string RelativePath, double Weight);

/// <summary>
/// What an ONNX export of a base model is asked for, in the words the UI and API use: the layout (<c>optimum</c>,
/// <c>diffusers</c>), float16, the attention form (<c>standard</c>, <c>fused</c>), LoRAs merged and embeddings baked in
/// (relative paths as the catalog lists them).
/// </summary>
public sealed record OnnxExportChoices(string Layout = "optimum", bool Half = false, string Attention = "standard",
    IReadOnlyList<ModelExportLora>? Loras = null, IReadOnlyList<string>? Embeddings = null);

/// <summary>
/// The convert/export actions of the catalog's models as jobs of the queue (<see cref="ConversionJobRunner"/>), each
/// ending in a file to download (<see cref="JobDownloads"/>): base models to float16, to a diffusers folder, or merged
/// with a LoRA; embeddings to A1111's <c>.pt</c>. A model is named by its kind and relative path, as the catalog lists it
/// for the caller; the job writes into its own folder.
/// </summary>
public sealed class ModelExports(ModelCatalog catalog, JobService jobs)
{
    private static readonly ModelExportKind Fp16 = new(ConversionJobRunner.Fp16, "fp16", ConversionJobRunner.Exports[ConversionJobRunner.Fp16]);
    private static readonly ModelExportKind Diffusers = new(ConversionJobRunner.Diffusers, "Diffusers folder", ConversionJobRunner.Exports[ConversionJobRunner.Diffusers]);
    private static readonly ModelExportKind Merged = new(ConversionJobRunner.Merged, "Merge a LoRA", ConversionJobRunner.Exports[ConversionJobRunner.Merged]);
    private static readonly ModelExportKind A1111Embedding = new(ConversionJobRunner.A1111Embedding, "A1111 embedding (.pt)", ConversionJobRunner.Exports[ConversionJobRunner.A1111Embedding]);
    private static readonly ModelExportKind Onnx = new(ConversionJobRunner.Onnx, "Export to ONNX", ConversionJobRunner.Exports[ConversionJobRunner.Onnx]);

    /// <summary>The ONNX layouts by the names requests use (optimum's first, the default).</summary>
    public static IReadOnlyList<string> OnnxLayouts { get; } = [.. OnnxExportOptions.LayoutNames.Keys];

    /// <summary>
    /// What a model of <paramref name="kind"/> can be exported as. A kohya LoRA has no export: the appliance's LoRAs are
    /// kohya files already (download them from their training run), and no writer turns another LoRA layout into kohya's.
    /// </summary>
    public static IReadOnlyList<ModelExportKind> For(ModelKind kind) => kind switch
    {
        ModelKind.Checkpoint => [Fp16, Diffusers, Merged, Onnx],
        ModelKind.Embedding => [A1111Embedding],
        _ => [],
    };

    /// <summary>What <paramref name="model"/> can be exported as: an ONNX export holds no weights our writers read, so nothing.</summary>
    public static IReadOnlyList<ModelExportKind> For(ModelEntry model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return model.Format == "onnx" ? [] : For(model.Kind);
    }

    /// <summary>
    /// Queues the export <paramref name="export"/> of the caller's model <paramref name="relativePath"/> of
    /// <paramref name="kind"/>; <paramref name="lora"/> (a LoRA's relative path) and <paramref name="weight"/> for a merge,
    /// <paramref name="half"/> to store a merge in float16. Refused, naming the field, when the model or LoRA is not one
    /// the caller sees, or the export does not apply to the kind.
    /// </summary>
    public async Task<JobView> SubmitAsync(Caller caller, ModelKind kind, string relativePath, string export, string? lora, double weight, bool half,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(caller);
        if (!For(kind).Any(e => e.Name == export))
            throw new UserInputException("export", $"'{export}' is not an export of a {kind.ToString().ToLowerInvariant()}",
                For(kind).Count == 0 ? "this kind of model has no export" : $"choose one of {string.Join(", ", For(kind).Select(e => e.Name))}");
        if (export == ConversionJobRunner.Onnx)
            return await SubmitOnnxAsync(caller, relativePath,
                new OnnxExportChoices(Half: half, Loras: string.IsNullOrWhiteSpace(lora) ? [] : [new ModelExportLora(lora, weight)]), cancellationToken);
        var model = await FindAsync(caller, kind, relativePath, "model", cancellationToken);
        if (model.Problem is { } problem)
            throw new UserInputException(relativePath, $"cannot be exported: {problem}");
        string? loraPath = null;
        if (export == ConversionJobRunner.Merged)
        {
            if (string.IsNullOrWhiteSpace(lora)) throw new UserInputException("lora", "missing", "choose the LoRA to merge into the model");
            loraPath = (await FindAsync(caller, ModelKind.Lora, lora, "lora", cancellationToken)).Path;
        }
        var request = JsonSerializer.SerializeToElement(new Dictionary<string, object?>
        {
            ["input"] = model.Path,
            ["export"] = export,
            ["lora"] = loraPath,
            ["weight"] = export == ConversionJobRunner.Merged ? weight : null,
            ["half"] = half,
            ["source"] = $"{kind.ToString().ToLowerInvariant()}/{model.RelativePath}",
        });
        return await jobs.SubmitAsync(new JobSubmission(JobKind.Conversion, caller.UserId, request), cancellationToken);
    }

    /// <summary>
    /// Queues the ONNX export of the caller's base model <paramref name="relativePath"/>: the folder lands in <c>models/</c>
    /// as a new base model of the caller's, private when the source is. Refused, naming the field, when the model, a LoRA
    /// or an embedding is not one the caller sees, or a choice is not one of its names.
    /// </summary>
    public async Task<JobView> SubmitOnnxAsync(Caller caller, string relativePath, OnnxExportChoices choices, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(caller);
        ArgumentNullException.ThrowIfNull(choices);
        var model = await FindAsync(caller, ModelKind.Checkpoint, relativePath, "model", cancellationToken);
        if (model.Problem is { } problem)
            throw new UserInputException(relativePath, $"cannot be exported: {problem}");
        var loras = new List<Dictionary<string, object>>();
        foreach (var lora in choices.Loras ?? [])
            loras.Add(new() { ["path"] = (await FindAsync(caller, ModelKind.Lora, lora.RelativePath, "loras", cancellationToken)).Path, ["weight"] = lora.Weight });
        var embeddings = new List<string>();
        foreach (var embedding in choices.Embeddings ?? [])
            embeddings.Add((await FindAsync(caller, ModelKind.Embedding, embedding, "embeddings", cancellationToken)).Path);
        var request = JsonSerializer.SerializeToElement(new Dictionary<string, object?>
        {
            ["input"] = model.Path,
            ["export"] = ConversionJobRunner.Onnx,
            ["layout"] = choices.Layout,
            ["half"] = choices.Half,
            ["attention"] = choices.Attention,
            ["loras"] = loras,
            ["embeddings"] = embeddings,
            ["private"] = model.IsPrivate,
            ["source"] = $"checkpoint/{model.RelativePath}",
        });
        return await jobs.SubmitAsync(new JobSubmission(JobKind.Conversion, caller.UserId, request), cancellationToken);
    }

    /// <summary>The caller's export jobs (an admin's: everyone's), newest first.</summary>
    public async Task<IReadOnlyList<ModelExportJob>> ListAsync(Caller caller, CancellationToken cancellationToken)
    {
        var all = await jobs.ListAsync(caller, null, cancellationToken);
        return [.. all.Where(j => j.Kind == JobKind.Conversion && j.Request.ValueKind == JsonValueKind.Object
                && j.Request.TryGetProperty("export", out var e) && e.ValueKind == JsonValueKind.String)
            .Select(j => new ModelExportJob(j, j.Request.GetProperty("export").GetString()!,
                j.Request.TryGetProperty("source", out var s) && s.ValueKind == JsonValueKind.String ? s.GetString()! : Path.GetFileName(j.Request.GetProperty("input").GetString() ?? "")))];
    }

    private async Task<ModelEntry> FindAsync(Caller caller, ModelKind kind, string relativePath, string field, CancellationToken cancellationToken)
    {
        var entries = await catalog.ListAsync(caller, kind, cancellationToken);
        return entries.FirstOrDefault(e => e.RelativePath == relativePath)
            ?? throw new UserInputException(field, $"there is no {kind.ToString().ToLowerInvariant()} '{relativePath}' you can see", "choose one from the list");
    }
}
