using SdAppliance.Formats.Hashing;
using SdAppliance.Formats.Adapters;
using SdAppliance.Formats;
using SdAppliance.Models.Adapters;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;
using SdAppliance.Torch.Serialization;
using SdAppliance.Training.Data;

namespace SdAppliance.Training.Methods;

/// <summary>
/// What a fine-tuning method trains and how it saves it: the parameter groups, whether the text
/// encoder must run with gradients, the values a saved training state holds, and the result files.
/// </summary>
public abstract class TrainingMethod : IDisposable
{
    protected TrainingMethod(StableDiffusionModel model, TrainingConfig config)
    {
        Model = model;
        Config = config;
    }

    protected StableDiffusionModel Model { get; }
    protected TrainingConfig Config { get; }

    /// <summary>(parameters, learning rate) groups for the optimizer.</summary>
    public abstract IReadOnlyList<(IReadOnlyList<Tensor> Parameters, double LearningRate)> ParameterGroups { get; }

    /// <summary>Whether text conditioning depends on trained values (then it is not cached and runs with gradients).</summary>
    public virtual bool TrainsTextConditioning => false;

    /// <summary>Embeddings the prompts may use (textual inversion's new token).</summary>
    public virtual IReadOnlyList<TextualInversionEmbedding> Embeddings => [];

    /// <summary>The trained values, by name, for saved training states (resume reads them back).</summary>
    public abstract IReadOnlyDictionary<string, Tensor> TrainedState();

    public void SaveState(string file) => TensorFiles.Save(file, TrainedState());

    public virtual void LoadState(string file)
    {
        using var saved = TensorFile.Open(file);
        using var noGrad = Autograd.NoGrad();
        foreach (var (name, target) in TrainedState())
        {
            if (!saved.Contains(name)) throw new InvalidDataException($"saved training state '{file}' lacks '{name}'; it was made by another method or model");
            using var value = saved.ReadTensor(name);
            target.Copy_(value);
        }
    }

    /// <summary>Called after each optimizer step (EMA).</summary>
    public virtual void AfterOptimizerStep(long step) { }

    /// <summary>The dataset and the epoch (1-based) the results come from, for the metadata result files carry; set by the trainer before <see cref="Export"/>.</summary>
    public (TrainingDataset Dataset, int Epoch)? TrainedOn { get; set; }

    /// <summary>Writes the results into the run folder; returns their paths.</summary>
    public abstract IReadOnlyList<string> Export(string runFolder, string name, long step);

    public virtual void Dispose() { }

    /// <summary>What A1111 writes as a result's <c>sd_checkpoint</c>: the base model file's short hash (none for a folder).</summary>
    protected string? A1111CheckpointHash() => File.Exists(Model.SourcePath) ? FileHashes.Uncached.ModelShortHash(Model.SourcePath) : null;

    public static TrainingMethod Create(TrainingMethodKind kind, StableDiffusionModel model, TrainingConfig config, Generator generator) => kind switch
    {
        TrainingMethodKind.Lora => new LoraMethod(model, config, generator),
        TrainingMethodKind.DreamBooth => new FullMethod(model, config, ema: false),
        TrainingMethodKind.Finetune => new FullMethod(model, config, ema: config.UseEma),
        TrainingMethodKind.TextualInversion => new TextualInversionMethod(model, config),
        TrainingMethodKind.Hypernetwork => new HypernetworkMethod(model, config, generator),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };
}
