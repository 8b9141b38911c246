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

    public static void Save(string folder, RunState state, TrainingMethod method, Optimizer optimizer, LrScheduler schedule, Generator noise, int keepLast)
    {
        Directory.CreateDirectory(folder);
        var name = $"step-{state.Step:D6}";
        AtomicFile.WriteFolder(Path.Combine(folder, name), temp =>
        {
            method.SaveState(Path.Combine(temp, Trained));
            using (var optimizerState = optimizer.StateDict()) optimizerState.Save(Path.Combine(temp, OptimizerFile));
            using var cpuDefault = Generator.Default(Device.Cpu);
            var json = new JsonObject
            {
                ["step"] = state.Step,
                ["epoch"] = state.Epoch,
                ["batch_in_epoch"] = state.BatchInEpoch,
                ["smoothed_loss"] = double.IsFinite(state.SmoothedLoss) ? state.SmoothedLoss : null,
                ["loss_scale"] = state.LossScale,
                ["lr_scheduler"] = schedule.StateDict(),
                ["noise_generator"] = Convert.ToBase64String(noise.GetStateBytes()),
                ["default_cpu_generator"] = Convert.ToBase64String(cpuDefault.GetStateBytes()),
                ["saved_at"] = DateTimeOffset.UtcNow.ToString("O", CultureInfo.InvariantCulture),
            };
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

    public static RunState Load(string state, TrainingMethod method, Optimizer optimizer, LrScheduler schedule, Generator noise)
    {
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(state, StateFile)))!.AsObject();
        method.LoadState(Path.Combine(state, Trained));
        using (var optimizerState = OptimizerStateDict.Load(Path.Combine(state, OptimizerFile))) optimizer.LoadStateDict(optimizerState);
        schedule.LoadStateDict(json["lr_scheduler"]!.AsObject());
        noise.SetStateBytes(Convert.FromBase64String(json["noise_generator"]!.GetValue<string>()));
        using (var cpuDefault = Generator.Default(Device.Cpu))
            cpuDefault.SetStateBytes(Convert.FromBase64String(json["default_cpu_generator"]!.GetValue<string>()));
        return new RunState
        {
            Step = json["step"]!.GetValue<long>(),
            Epoch = json["epoch"]!.GetValue<int>(),
            BatchInEpoch = json["batch_in_epoch"]!.GetValue<int>(),
            SmoothedLoss = json["smoothed_loss"]?.GetValue<double>() ?? double.NaN,
            LossScale = json["loss_scale"]?.GetValue<double>() ?? 1,
        };
    }
}
