using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using SdAppliance.Formats;
using SdAppliance.Torch;
using SdAppliance.Torch.Optim;
using SdAppliance.Training.Methods;

namespace SdAppliance.Training.Runs;

/// <summary>
/// Saved training states, from which a run resumes exactly: <c>checkpoints/step-NNNNNN/</c> (the folder name users know)
/// holding the trained values, the optimizer state, and <c>state.json</c> (step, epoch, data position, LR schedule,
/// generator states). A state is written into a temporary folder and renamed, so a crash leaves either the whole state
/// or none; only the last K are kept. ("Checkpoint" in this project's code means a torch <c>.ckpt</c> file.)
/// </summary>
internal static class TrainingStates
{
    private const string Trained = "trained.safetensors";
    private const string OptimizerFile = "optimizer.safetensors";
    private const string StateFile = "state.json";

    /// <param name="rankGenerators">In a data-parallel run, every rank's default CPU generator state in rank order (rank 0's is this process's).</param>
    public static void Save(string folder, RunState state, TrainingMethod method, Optimizer optimizer, LrScheduler schedule, Generator noise, int keepLast,
        IReadOnlyList<byte[]>? rankGenerators = null)
    {
        Directory.CreateDirectory(folder);
        var name = $"step-{state.Step:D6}";
        AtomicFile.WriteFolder(Path.Combine(folder, name), temp =>
        {
            method.SaveState(Path.Combine(temp, Trained));
            using (var optimizerState = optimizer.StateDict()) optimizerState.Save(Path.Combine(temp, OptimizerFile));
            using var cpuDefault = Generator.Default(Device.Cpu);
            var json = state.ToJson();
            json["lr_scheduler"] = schedule.StateDict();
            json["noise_generator"] = Convert.ToBase64String(noise.GetStateBytes());
            json["default_cpu_generator"] = Convert.ToBase64String(cpuDefault.GetStateBytes());
            json["world_size"] = rankGenerators?.Count ?? 1;
            json["saved_at"] = DateTimeOffset.UtcNow.ToString("O", CultureInfo.InvariantCulture);
            if (rankGenerators is not null)
                json["rank_default_cpu_generators"] = new JsonArray([.. rankGenerators.Select(g => (JsonNode)Convert.ToBase64String(g))]);
            // state.json last: a folder with it is complete.
            AtomicFile.WriteAllText(Path.Combine(temp, StateFile), json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        });
        foreach (var old in Complete(folder).SkipLast(keepLast)) Directory.Delete(old, recursive: true);
    }

    /// <summary>The complete states, oldest first.</summary>
    internal static IEnumerable<string> Complete(string folder) =>
        Directory.Exists(folder)
            ? Directory.EnumerateDirectories(folder, "step-*").Where(d => File.Exists(Path.Combine(d, StateFile))).Order(StringComparer.Ordinal)
            : [];

    /// <summary>The newest complete state, or null when none was saved yet.</summary>
    public static string? Latest(string folder) => Complete(folder).LastOrDefault();

    /// <summary>Whether a state folder was ever started in <paramref name="folder"/> (complete or not): a run lives there.</summary>
    public static bool Any(string folder) => Directory.Exists(folder) && Directory.EnumerateDirectories(folder, "step-*").Any();

    /// <param name="rank">This process's rank in a data-parallel run: the state must come from a run of as many ranks, and
    /// each rank takes back its own default generator.</param>
    public static RunState Load(string state, TrainingMethod method, Optimizer optimizer, LrScheduler schedule, Generator noise, Distributed.DataParallelRank? rank = null)
    {
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(state, StateFile)))!.AsObject();
        var savedWorld = json["world_size"]?.GetValue<int>() ?? 1;
        var world = rank?.WorldSize ?? 1;
        // Another world size draws other batches from the same data position: the resumed run would not be this run.
        if (savedWorld != world)
            throw new TrainingConfigException(
                $"num_processes: '{state}' was saved by a run of {savedWorld} rank(s) and this one has {world}; resume with num_processes x num_machines = {savedWorld}");
        method.LoadState(Path.Combine(state, Trained));
        using (var optimizerState = OptimizerStateDict.Load(Path.Combine(state, OptimizerFile))) optimizer.LoadStateDict(optimizerState);
        schedule.LoadStateDict(json["lr_scheduler"]!.AsObject());
        noise.SetStateBytes(Convert.FromBase64String(json["noise_generator"]!.GetValue<string>()));
        var generator = rank is not null && json["rank_default_cpu_generators"] is JsonArray ranks ? ranks[rank.Rank]! : json["default_cpu_generator"]!;
        using (var cpuDefault = Generator.Default(Device.Cpu))
            cpuDefault.SetStateBytes(Convert.FromBase64String(generator.GetValue<string>()));
        return RunState.Read(json);
    }
}
