using System.Globalization;

namespace SdAppliance.Torch.Optim;

/// <summary>
/// A learning-rate multiplier as a pure function of the step, with the formulas of diffusers'
/// <c>get_scheduler</c> (diffusers/optimization.py). The scheduled lr is base_lr × Multiplier(step).
/// </summary>
public sealed class LrSchedule
{
    private readonly Func<long, double> multiplier;

    private LrSchedule(string name, Func<long, double> multiplier)
    {
        Name = name;
        this.multiplier = multiplier;
    }

    /// <summary>The diffusers name of the schedule (linear, cosine, ...).</summary>
    public string Name { get; }

    public double Multiplier(long step) => multiplier(step);

    /// <summary>The names <see cref="Create"/> accepts, spelled as diffusers spells them.</summary>
    public static IReadOnlyList<string> Names { get; } =
        ["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "piecewise_constant"];

    /// <summary>
    /// A schedule by name, as diffusers' <c>get_scheduler</c>: constant ignores warmup;
    /// constant_with_warmup needs <paramref name="warmupSteps"/>; linear, cosine,
    /// cosine_with_restarts and polynomial need both step counts. As in diffusers,
    /// <paramref name="numCycles"/> applies to cosine_with_restarts only (cosine keeps its half
    /// period: use <see cref="Cosine"/> for another), <paramref name="power"/> to polynomial,
    /// which also needs the optimizer's initial lr (<paramref name="initialLr"/>, it divides by it),
    /// and <paramref name="stepRules"/> to piecewise_constant.
    /// </summary>
    public static LrSchedule Create(string name, int? warmupSteps = null, int? trainingSteps = null, double numCycles = 1,
        double power = 1.0, double? initialLr = null, string? stepRules = null, double lrEnd = 1e-7)
    {
        var key = name.Trim().ToLowerInvariant();
        if (!Names.Contains(key))
            throw new ArgumentException($"unknown lr schedule '{name}': use one of {string.Join(", ", Names)}", nameof(name));
        if (key == "constant") return Constant();
        if (key == "piecewise_constant")
            return PiecewiseConstant(stepRules ?? throw new ArgumentException("piecewise_constant requires step rules such as \"1:10,0.1:20,0.01\"", nameof(stepRules)));
        var warmup = warmupSteps ?? throw new ArgumentException($"{key} requires warmupSteps", nameof(warmupSteps));
        if (key == "constant_with_warmup") return ConstantWithWarmup(warmup);
        var training = trainingSteps ?? throw new ArgumentException($"{key} requires trainingSteps", nameof(trainingSteps));
        return key switch
        {
            "linear" => Linear(warmup, training),
            "cosine" => Cosine(warmup, training),
            "cosine_with_restarts" => CosineWithRestarts(warmup, training, numCycles),
            "polynomial" => Polynomial(warmup, training,
                initialLr ?? throw new ArgumentException("polynomial requires the optimizer's initial lr", nameof(initialLr)), lrEnd, power),
            _ => throw new InvalidOperationException(key),
        };
    }

    public static LrSchedule Constant() => new("constant", _ => 1.0);

    public static LrSchedule ConstantWithWarmup(int warmupSteps)
    {
        CheckSteps(warmupSteps, 0);
        return new("constant_with_warmup", step => step < warmupSteps ? Warmup(step, warmupSteps) : 1.0);
    }

    /// <summary>Linear warmup from 0, then linear decay to 0 at <paramref name="trainingSteps"/>.</summary>
    public static LrSchedule Linear(int warmupSteps, int trainingSteps)
    {
        CheckSteps(warmupSteps, trainingSteps);
        return new("linear", step => step < warmupSteps
            ? Warmup(step, warmupSteps)
            : Math.Max(0.0, (double)(trainingSteps - step) / Math.Max(1, trainingSteps - warmupSteps)));
    }

    /// <summary>
    /// Linear warmup, then 0.5·(1 + cos(2π·numCycles·progress)): with the default half cycle it
    /// falls from 1 to 0 at <paramref name="trainingSteps"/> (and, as in diffusers, rises again past it).
    /// </summary>
    public static LrSchedule Cosine(int warmupSteps, int trainingSteps, double numCycles = 0.5)
    {
        CheckSteps(warmupSteps, trainingSteps);
        return new("cosine", step =>
        {
            if (step < warmupSteps) return Warmup(step, warmupSteps);
            var progress = Progress(step, warmupSteps, trainingSteps);
            return Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * numCycles * 2.0 * progress)));
        });
    }

    /// <summary>Linear warmup, then <paramref name="numCycles"/> cosine decays from 1 to 0 with hard restarts; 0 from the end on.</summary>
    public static LrSchedule CosineWithRestarts(int warmupSteps, int trainingSteps, double numCycles = 1)
    {
        CheckSteps(warmupSteps, trainingSteps);
        return new("cosine_with_restarts", step =>
        {
            if (step < warmupSteps) return Warmup(step, warmupSteps);
            var progress = Progress(step, warmupSteps, trainingSteps);
            if (progress >= 1.0) return 0.0;
            return Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * ((numCycles * progress) % 1.0))));
        });
    }

    /// <summary>
    /// Linear warmup, then lr decays from <paramref name="initialLr"/> to <paramref name="lrEnd"/> as
    /// (1 − progress)^power; the multiplier is relative to <paramref name="initialLr"/> (diffusers
    /// uses the optimizer's default lr), lrEnd / initialLr past the end.
    /// </summary>
    public static LrSchedule Polynomial(int warmupSteps, int trainingSteps, double initialLr, double lrEnd = 1e-7, double power = 1.0)
    {
        CheckSteps(warmupSteps, trainingSteps);
        if (!(initialLr > lrEnd)) throw new ArgumentException($"lr_end ({lrEnd}) must be smaller than the initial lr ({initialLr})", nameof(lrEnd));
        if (trainingSteps <= warmupSteps)
            throw new ArgumentException($"polynomial decay needs more training steps ({trainingSteps}) than warmup steps ({warmupSteps})", nameof(trainingSteps));
        return new("polynomial", step =>
        {
            if (step < warmupSteps) return Warmup(step, warmupSteps);
            if (step > trainingSteps) return lrEnd / initialLr;
            var remaining = 1 - (double)(step - warmupSteps) / (trainingSteps - warmupSteps);
            return ((initialLr - lrEnd) * Math.Pow(remaining, power) + lrEnd) / initialLr;
        });
    }

    /// <summary>
    /// Multipliers by step ranges, in diffusers' syntax: "1:10,0.1:20,0.01" gives 1 for steps below 10,
    /// 0.1 below 20 and 0.01 from then on.
    /// </summary>
    public static LrSchedule PiecewiseConstant(string stepRules)
    {
        var rules = new SortedDictionary<long, double>();
        var parts = stepRules.Split(',');
        for (var i = 0; i < parts.Length - 1; i++)
        {
            var pair = parts[i].Split(':');
            if (pair.Length != 2
                || !double.TryParse(pair[0], NumberStyles.Float, CultureInfo.InvariantCulture, out var value)
                || !long.TryParse(pair[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out var steps))
                throw new ArgumentException($"bad step rule '{parts[i]}' in \"{stepRules}\": each rule but the last is multiplier:step, e.g. \"1:10,0.1:20,0.01\"", nameof(stepRules));
            rules[steps] = value;
        }
        if (!double.TryParse(parts[^1], NumberStyles.Float, CultureInfo.InvariantCulture, out var last))
            throw new ArgumentException($"bad last step rule '{parts[^1]}' in \"{stepRules}\": it is the multiplier after the last step, e.g. \"1:10,0.1:20,0.01\"", nameof(stepRules));
        var bounds = rules.Keys.ToArray();
        var values = rules.Values.ToArray();
        return new("piecewise_constant", step =>
        {
            for (var i = 0; i < bounds.Length; i++)
                if (step < bounds[i]) return values[i];
            return last;
        });
    }

    private static double Warmup(long step, int warmupSteps) => (double)step / Math.Max(1, warmupSteps);

    private static double Progress(long step, int warmupSteps, int trainingSteps) =>
        (double)(step - warmupSteps) / Math.Max(1, trainingSteps - warmupSteps);

    private static void CheckSteps(int warmupSteps, int trainingSteps)
    {
        if (warmupSteps < 0) throw new ArgumentOutOfRangeException(nameof(warmupSteps), warmupSteps, "warmup steps must be >= 0");
        if (trainingSteps < 0) throw new ArgumentOutOfRangeException(nameof(trainingSteps), trainingSteps, "training steps must be >= 0");
    }
}
