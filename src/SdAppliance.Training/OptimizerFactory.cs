using SdAppliance.Torch;
using SdAppliance.Torch.Optim;

namespace SdAppliance.Training;

/// <summary>The engine's optimizer a run asks for, over a method's parameter groups (each with its own learning rate).</summary>
public static class OptimizerFactory
{
    public static Optimizer Create(OptimizerKind kind, TrainingConfig config, IReadOnlyList<(IReadOnlyList<Tensor> Parameters, double LearningRate)> parameterGroups)
    {
        var groups = parameterGroups.Where(g => g.Parameters.Count > 0).ToList();
        if (groups.Count == 0) throw new TrainingConfigException($"method: {config.Method} found nothing to train in this model");
        return kind switch
        {
            OptimizerKind.AdamW => new AdamW(groups.Select(g => new ParamGroup<AdamWOptions>(g.Parameters, new AdamWOptions
            {
                Lr = g.LearningRate, Beta1 = config.AdamBeta1, Beta2 = config.AdamBeta2, Eps = config.AdamEpsilon, WeightDecay = config.AdamWeightDecay,
            }))),
            OptimizerKind.Adam => new Adam(groups.Select(g => new ParamGroup<AdamOptions>(g.Parameters,
                new AdamOptions { Lr = g.LearningRate, Beta1 = config.AdamBeta1, Beta2 = config.AdamBeta2, Eps = config.AdamEpsilon }))),
            OptimizerKind.AdamW8bit => new AdamW8bit(groups.Select(g => new ParamGroup<AdamW8bitOptions>(g.Parameters, new AdamW8bitOptions
            {
                Lr = g.LearningRate, Beta1 = config.AdamBeta1, Beta2 = config.AdamBeta2, Eps = config.AdamEpsilon, WeightDecay = config.AdamWeightDecay,
            }))),
            OptimizerKind.Sgd => new Sgd(groups.Select(g => new ParamGroup<SgdOptions>(g.Parameters, new SgdOptions { Lr = g.LearningRate }))),
            OptimizerKind.Lion => new Lion(groups.Select(g => new ParamGroup<LionOptions>(g.Parameters,
                new LionOptions { Lr = g.LearningRate, WeightDecay = config.AdamWeightDecay }))),
            OptimizerKind.Lion8bit => new Lion8bit(groups.Select(g => new ParamGroup<Lion8bitOptions>(g.Parameters,
                new Lion8bitOptions { Lr = g.LearningRate, WeightDecay = config.AdamWeightDecay }))),
            OptimizerKind.Adafactor => new Adafactor(groups.Select(g => new ParamGroup<AdafactorOptions>(g.Parameters,
                new AdafactorOptions { Lr = g.LearningRate, RelativeStep = false, ScaleParameter = false, WarmupInit = false }))),
            OptimizerKind.Prodigy => new Prodigy(groups.Select(g => new ParamGroup<ProdigyOptions>(g.Parameters, new ProdigyOptions
            {
                Lr = g.LearningRate, Beta1 = config.AdamBeta1, Beta2 = config.AdamBeta2, Eps = config.AdamEpsilon, WeightDecay = config.AdamWeightDecay,
                DCoef = config.DCoef, UseBiasCorrection = config.UseBiasCorrection, SafeguardWarmup = config.SafeguardWarmup,
            }))),
            _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
        };
    }
}
