using System.Text.Json;
using System.Text.Json.Nodes;

namespace SdAppliance.Torch.Optim;

/// <summary>
/// Drives an optimizer's learning rates from an <see cref="LrSchedule"/>, as PyTorch's LambdaLR:
/// each group's lr = its base lr × Multiplier(step). Construction applies step 0; call
/// <see cref="Step"/> after each optimizer step.
/// </summary>
public sealed class LrScheduler
{
    private readonly Optimizer optimizer;
    private double[] baseLrs;

    public LrScheduler(Optimizer optimizer, LrSchedule schedule)
    {
        this.optimizer = optimizer;
        Schedule = schedule;
        baseLrs = optimizer.ParamGroups.Select(g => g.Lr).ToArray();
        Apply();
    }

    /// <summary>
    /// A schedule by diffusers name over <paramref name="optimizer"/> (see <see cref="LrSchedule.Create"/>);
    /// polynomial decays relative to the optimizer's default lr, as diffusers does.
    /// </summary>
    public LrScheduler(Optimizer optimizer, string name, int? warmupSteps = null, int? trainingSteps = null, double numCycles = 1,
        double power = 1.0, string? stepRules = null)
        : this(optimizer, LrSchedule.Create(name, warmupSteps, trainingSteps, numCycles, power, optimizer.DefaultOptions.Lr, stepRules)) { }

    public LrSchedule Schedule { get; }

    /// <summary>The step whose lr is set now (0 after construction), as LambdaLR's last_epoch.</summary>
    public long LastEpoch { get; private set; }

    /// <summary>The lr of each group when the scheduler was made.</summary>
    public IReadOnlyList<double> BaseLrs => baseLrs;

    /// <summary>The lrs set for the current step, one per group (PyTorch's get_last_lr()).</summary>
    public IReadOnlyList<double> LastLr => baseLrs.Select(b => b * Schedule.Multiplier(LastEpoch)).ToArray();

    public void Step()
    {
        LastEpoch++;
        Apply();
    }

    private void Apply()
    {
        var groups = optimizer.ParamGroups;
        if (groups.Count != baseLrs.Length)
            throw new InvalidOperationException($"the optimizer has {groups.Count} parameter groups but the scheduler was made for {baseLrs.Length}");
        var m = Schedule.Multiplier(LastEpoch);
        for (var i = 0; i < groups.Count; i++) groups[i].Lr = baseLrs[i] * m;
    }

    /// <summary><c>{"schedule": name, "last_epoch": n, "base_lrs": [...]}</c>.</summary>
    public JsonObject StateDict() => new()
    {
        ["schedule"] = Schedule.Name,
        ["last_epoch"] = LastEpoch,
        ["base_lrs"] = new JsonArray(baseLrs.Select(b => (JsonNode)b).ToArray()),
    };

    /// <summary>Restores the step and base lrs and sets the groups' lrs for that step.</summary>
    public void LoadStateDict(JsonObject state)
    {
        long lastEpoch;
        double[] lrs;
        try
        {
            lastEpoch = state["last_epoch"]?.Deserialize<long>() ?? throw new ArgumentException("the scheduler state lacks last_epoch");
            lrs = state["base_lrs"]?.Deserialize<double[]>() ?? throw new ArgumentException("the scheduler state lacks base_lrs");
        }
        catch (JsonException e)
        {
            throw new ArgumentException($"bad scheduler state: {e.Message}", e);
        }
        if (lrs.Length != optimizer.ParamGroups.Count)
            throw new ArgumentException($"the scheduler state has {lrs.Length} base lrs but the optimizer has {optimizer.ParamGroups.Count} parameter groups");
        baseLrs = lrs;
        LastEpoch = lastEpoch;
        Apply();
    }
}
