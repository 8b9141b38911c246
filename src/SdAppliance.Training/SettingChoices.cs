namespace SdAppliance.Training;

/// <summary>The five ways to fine-tune (<see cref="TrainingConfig.Method"/>).</summary>
public enum TrainingMethodKind
{
    Lora,
    DreamBooth,
    TextualInversion,
    Finetune,
    Hypernetwork,
}

/// <summary>What the forward pass autocasts to on CUDA (<see cref="TrainingConfig.MixedPrecision"/>); the weights stay float32.</summary>
public enum AutocastPrecision
{
    None,
    Float16,
    BFloat16,
}

/// <summary>The optimizers a run can use (<see cref="TrainingConfig.Optimizer"/>).</summary>
public enum OptimizerKind
{
    AdamW,
    Adam,
    Sgd,
    Lion,
    Adafactor,
    Prodigy,
    AdamW8bit,
    Lion8bit,
}

/// <summary>The per-pixel loss (<see cref="TrainingConfig.LossType"/>), as kohya's conditional_loss.</summary>
public enum LossKind
{
    L2,
    L1,
    Huber,
    SmoothL1,
}

/// <summary>How the huber and smooth_l1 threshold follows the timestep (<see cref="TrainingConfig.HuberSchedule"/>).</summary>
public enum HuberScheduleKind
{
    Snr,
    Exponential,
    Constant,
}

/// <summary>
/// A setting that is one of a few names: the names run.json and the flags use, and the enum the code uses. A run's
/// text is parsed once, when it starts; past that point only the enum travels.
/// </summary>
public sealed class SettingChoices<T>
    where T : struct, Enum
{
    private readonly (string Name, T Value)[] entries;
    private readonly StringComparison comparison;

    public SettingChoices(string field, StringComparison comparison, params (string Name, T Value)[] entries)
    {
        Field = field;
        this.comparison = comparison;
        this.entries = entries;
        Names = [.. entries.Select(e => e.Name)];
    }

    /// <summary>The run.json field (<c>method</c>), named in the error of an unknown value.</summary>
    public string Field { get; }

    /// <summary>The accepted names, in the order help lists them.</summary>
    public IReadOnlyList<string> Names { get; }

    /// <summary>The enum of <paramref name="text"/>; an unknown name is a <see cref="TrainingConfigException"/> listing the names.</summary>
    public T Parse(string? text)
    {
        foreach (var (name, value) in entries)
            if (string.Equals(name, text, comparison)) return value;
        throw new TrainingConfigException($"{Field}: '{text}' is not one of {string.Join(", ", Names)}");
    }
}
