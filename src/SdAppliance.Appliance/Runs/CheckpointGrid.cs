using System.Globalization;
using System.Text.RegularExpressions;
using SdAppliance.Appliance.Catalog;
using SdAppliance.Appliance.Generation;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Formats;
using SdAppliance.Training.Runs;

namespace SdAppliance.Appliance.Runs;

/// <summary>A LoRA a run wrote: its file name in the run folder and the step it holds (null: the run's final one).</summary>
public sealed record RunLora(string Name, long? Step);

/// <summary>What a checkpoint × prompt grid compares: the run's LoRA files, the prompts, one seed for every image, the sampler steps.</summary>
public sealed record GridSelection(IReadOnlyList<string> Checkpoints, IReadOnlyList<string> Prompts, long Seed = 1234, int Steps = 20)
{
    public const int MaxCheckpoints = 8;
    public const int MaxPrompts = 8;

    /// <summary>What is wrong with the selection, by field ("checkpoints", "prompts", "seed", "steps"); empty when it can be generated.</summary>
    public IReadOnlyDictionary<string, string> Problems()
    {
        var problems = new Dictionary<string, string>(StringComparer.Ordinal);
        if (Checkpoints.Count == 0) problems["checkpoints"] = "choose at least one checkpoint";
        else if (Checkpoints.Count > MaxCheckpoints) problems["checkpoints"] = $"choose at most {MaxCheckpoints} checkpoints (got {Checkpoints.Count})";
        var prompts = Prompts.Count(p => !string.IsNullOrWhiteSpace(p));
        if (prompts == 0) problems["prompts"] = "give at least one prompt, one a line";
        else if (prompts > MaxPrompts) problems["prompts"] = $"give at most {MaxPrompts} prompts (got {prompts})";
        if (Seed < 0) problems["seed"] = $"a grid needs a fixed seed (0 or more), got {Seed}";
        if (Steps is < 1 or > 150) problems["steps"] = $"must be 1 to 150, got {Steps}";
        return problems;
    }

    /// <summary>The prompts that are not blank, trimmed.</summary>
    public IReadOnlyList<string> UsedPrompts => [.. Prompts.Where(p => !string.IsNullOrWhiteSpace(p)).Select(p => p.Trim())];
}

/// <summary>One image of a grid: which checkpoint and prompt, and the generation job that makes it.</summary>
public sealed record GridCell(string Checkpoint, int Prompt, Guid Job);

/// <summary>A grid as submitted: its selection and one generation job per checkpoint and prompt.</summary>
public sealed record GridPlan(GridSelection Selection, IReadOnlyList<GridCell> Cells);

/// <summary>
/// The checkpoint × prompt grid of a LoRA run: each chosen LoRA file of the run (the final one, and those "save now"
/// wrote) is put into the caller's LoRA catalog as a private LoRA named after the run and step, then every
/// (checkpoint, prompt) is one generation job through the queue with the same seed, so the images differ only by the
/// checkpoint. The best one is exported into the catalog under a name the user gives (written under a temporary name,
/// then renamed, by the catalog).
/// </summary>
public sealed partial class CheckpointGrid(RunFiles runs, ModelCatalog catalog, GenerationJobs generation)
{
    /// <summary>The LoRA files of <paramref name="run"/>, the final one last; none when the run trains no LoRA.</summary>
    public static IReadOnlyList<RunLora> Loras(RunFolder run)
    {
        if (!File.Exists(run.ConfigFile)) return [];
        try
        {
            if (run.LoadConfig().Method != "lora") return [];
        }
        catch (SdAppliance.Training.TrainingConfigException)
        {
            return [];
        }
        return [.. RunFiles.Results(run).Where(f => f.Name.EndsWith(".safetensors", StringComparison.Ordinal))
            .Select(f => new RunLora(f.Name, StepOf(f.Name)))
            .OrderBy(l => l.Step ?? long.MaxValue)];
    }

    /// <summary>Queues the grid's generations for <paramref name="caller"/>.</summary>
    /// <exception cref="UserInputException">naming the field: a selection with <see cref="GridSelection.Problems"/>, a checkpoint the run does not have.</exception>
    public async Task<GridPlan> SubmitAsync(Caller caller, Guid runId, GridSelection selection, CancellationToken cancellationToken)
    {
        if (selection.Problems().FirstOrDefault() is { Key: { } field, Value: { } problem }) throw new UserInputException(field, problem);
        var run = await runs.FindAsync(caller, runId, cancellationToken) ?? throw new UserInputException("run", $"no training run {runId}");
        var loras = Loras(run);
        // At the size the run trained at, as its samples.
        var size = run.LoadConfig().Resolution;
        var cells = new List<GridCell>();
        var prompts = selection.UsedPrompts;
        foreach (var checkpoint in selection.Checkpoints)
        {
            if (loras.All(l => l.Name != checkpoint))
                throw new UserInputException("checkpoints", $"run {runId} has no LoRA '{checkpoint}'", "choose among the run's saved LoRA files");
            var name = await CatalogNameAsync(caller, runId, run, checkpoint, cancellationToken);
            for (var p = 0; p < prompts.Count; p++)
            {
                var job = await generation.SubmitAsync(caller, new GenerationJobRequest
                {
                    Prompt = prompts[p], Seed = selection.Seed, Steps = selection.Steps, Loras = [new LoraWeight(name)], Width = size, Height = size,
                }, null, cancellationToken);
                cells.Add(new GridCell(checkpoint, p, job.Id));
            }
        }
        return new GridPlan(selection with { Prompts = prompts }, cells);
    }

    /// <summary>Copies the run's LoRA <paramref name="checkpoint"/> into the LoRA catalog as <paramref name="name"/> (.safetensors).</summary>
    public async Task<ModelEntry> ExportAsync(Caller caller, Guid runId, string checkpoint, string name, bool isPrivate, CancellationToken cancellationToken)
    {
        var run = await runs.FindAsync(caller, runId, cancellationToken) ?? throw new UserInputException("run", $"no training run {runId}");
        if (Loras(run).All(l => l.Name != checkpoint) || RunFiles.Result(run, checkpoint) is not { } file)
            throw new UserInputException("checkpoint", $"run {runId} has no LoRA '{checkpoint}'");
        if (string.IsNullOrWhiteSpace(name)) throw new UserInputException("name", "give the LoRA a name", "letters, digits, '-' and '_'");
        var fileName = name.Trim().EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) ? name.Trim() : name.Trim() + ".safetensors";
        await using var content = File.OpenRead(file);
        return await catalog.ImportAsync(caller, ModelKind.Lora, fileName, content, isPrivate, cancellationToken);
    }

    /// <summary>The catalog name of a grid's checkpoint (<c>run-ID8-FILE</c>), imported as a private LoRA the first time.</summary>
    private async Task<string> CatalogNameAsync(Caller caller, Guid runId, RunFolder run, string checkpoint, CancellationToken cancellationToken)
    {
        var name = $"run-{runId.ToString("N", CultureInfo.InvariantCulture)[..8]}-{Path.GetFileNameWithoutExtension(checkpoint)}";
        if (await catalog.FindAsync(caller, ModelKind.Lora, name, cancellationToken) is null)
        {
            await using var content = File.OpenRead(RunFiles.Result(run, checkpoint)!);
            await catalog.ImportAsync(caller, ModelKind.Lora, name + ".safetensors", content, isPrivate: true, cancellationToken);
        }
        return name;
    }

    private static long? StepOf(string name) =>
        StepSuffix().Match(name) is { Success: true } m ? long.Parse(m.Groups[1].ValueSpan, CultureInfo.InvariantCulture) : null;

    [GeneratedRegex(@"-step-(\d+)\.safetensors$", RegexOptions.CultureInvariant)]
    private static partial Regex StepSuffix();
}
