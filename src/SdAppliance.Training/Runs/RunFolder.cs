using SdAppliance.Formats;

namespace SdAppliance.Training.Runs;

/// <summary>
/// A run's folder as the trainer lays it out: <c>run.json</c> (the settings), <c>log.jsonl</c>, <c>tensorboard/</c>,
/// <c>checkpoints/step-N/</c> (the saved training states), <c>samples/</c>, <c>report.json</c> and the results. What makes a
/// folder a run, and what resuming it needs, is decided here for every front end.
/// </summary>
public sealed class RunFolder
{
    private const string ConfigFileName = "run.json";
    private const string StatesFolderName = "checkpoints";
    private const string SamplesFolderName = "samples";

    public RunFolder(string path) => Path = System.IO.Path.GetFullPath(path);

    /// <summary>The folder, absolute.</summary>
    public string Path { get; }

    /// <summary>The settings of the run, as resolved when it started (and with a new total when it was resumed to one).</summary>
    public string ConfigFile => System.IO.Path.Combine(Path, ConfigFileName);

    public string StatesFolder => System.IO.Path.Combine(Path, StatesFolderName);

    public string SamplesFolder => System.IO.Path.Combine(Path, SamplesFolderName);

    public string ReportFile => System.IO.Path.Combine(Path, "report.json");

    /// <summary>The step log, one JSON object per line (<see cref="RunLog"/>).</summary>
    public string LogFile => System.IO.Path.Combine(Path, "log.jsonl");

    /// <summary>The complete training states (<c>checkpoints/step-N</c>), oldest first.</summary>
    public IReadOnlyList<string> CompleteStates => [.. TrainingStates.Complete(StatesFolder)];

    /// <summary>Whether a run lives here: a training state was saved (or begun) in it.</summary>
    public bool HoldsRun => TrainingStates.Any(StatesFolder);

    /// <summary>The newest complete training state (<c>checkpoints/step-N</c>), or null when none was saved yet.</summary>
    public string? LatestState => TrainingStates.Latest(StatesFolder);

    /// <summary>A run to continue: the folder must hold its <c>run.json</c>; the message names the <c>resume</c> field.</summary>
    public static RunFolder ToResume(string path)
    {
        var folder = new RunFolder(path);
        if (!File.Exists(folder.ConfigFile))
            throw new TrainingConfigException($"resume: '{folder.Path}' is not a run folder (it has no {ConfigFileName})");
        return folder;
    }

    /// <summary>The newest complete training state, which a resume needs.</summary>
    public string StateToResume() =>
        LatestState ?? throw new TrainingConfigException($"resume: '{StatesFolder}' holds no complete training state to continue from");

    public TrainingConfig LoadConfig() => TrainingConfig.Load(ConfigFile);

    public void SaveConfig(TrainingConfig config) => AtomicFile.WriteAllText(ConfigFile, config.ToJson());

    /// <summary>
    /// Removes what a killed run left half-written (temporary files and folders of its atomic writes: <c>.step-N.ID.tmp</c>
    /// states, <c>.run.json.ID.tmp</c>, results, samples); what a crash cannot have touched stays. Returns the paths removed.
    /// </summary>
    public IReadOnlyList<string> RemoveUnfinishedWrites() =>
        [.. AtomicFile.RemoveLeftovers(Path), .. AtomicFile.RemoveLeftovers(StatesFolder), .. AtomicFile.RemoveLeftovers(SamplesFolder)];
}
