using SdAppliance.Models.Loading;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using SdAppliance.Training.Exports;

namespace SdAppliance.Training.Methods;

/// <summary>
/// DreamBooth and full fine-tuning: the UNet (and optionally the text encoder) trained as a whole;
/// fine-tuning keeps an exponential moving average of the weights and exports it.
/// </summary>
public sealed class FullMethod : TrainingMethod
{
    private readonly List<(string Name, Tensor Parameter)> trained = [];
    private readonly Dictionary<string, Tensor> shadow = new(StringComparer.Ordinal);
    private readonly bool ema;

    public FullMethod(StableDiffusionModel model, TrainingConfig config, bool ema) : base(model, config)
    {
        this.ema = ema;
        model.Unet.Unfreeze();
        trained.AddRange(model.Unet.NamedParameters("unet"));
        if (config.TrainTextEncoder)
        {
            model.TextEncoder.Unfreeze();
            trained.AddRange(model.TextEncoder.NamedParameters("text_encoder"));
            if (model.TextEncoder2 is not null)
            {
                model.TextEncoder2.Unfreeze();
                trained.AddRange(model.TextEncoder2.NamedParameters("text_encoder_2"));
            }
        }
        if (ema)
            foreach (var (name, p) in trained) shadow[name] = p.Detach().Clone().DetachFromDisposeScope();
    }

    public override IReadOnlyList<(IReadOnlyList<Tensor>, double)> ParameterGroups
    {
        get
        {
            var unet = trained.Where(t => t.Name.StartsWith("unet.", StringComparison.Ordinal)).Select(t => t.Parameter).ToList();
            var te = trained.Where(t => !t.Name.StartsWith("unet.", StringComparison.Ordinal)).Select(t => t.Parameter).ToList();
            return te.Count == 0 ? [(unet, Config.ScaledLearningRate())] : [(unet, Config.ScaledLearningRate()), (te, Config.ScaledTextEncoderLr())];
        }
    }

    public override bool TrainsTextConditioning => Config.TrainTextEncoder;

    public override IReadOnlyDictionary<string, Tensor> TrainedState()
    {
        var state = trained.ToDictionary(t => t.Name, t => t.Parameter, StringComparer.Ordinal);
        foreach (var (name, t) in shadow) state["ema." + name] = t;
        return state;
    }

    /// <summary>diffusers' EMAModel: decay warmed up as min(decay, (1 + step) / (10 + step)).</summary>
    public override void AfterOptimizerStep(long step)
    {
        if (!ema) return;
        var decay = Math.Min(Config.EmaDecay, (1.0 + step) / (10.0 + step));
        using var noGrad = Autograd.NoGrad();
        foreach (var (name, p) in trained) shadow[name].Lerp_(p, 1 - decay);
    }

    /// <summary>The suffix of the live weights' file (<see cref="TrainingConfig.SaveLiveWeights"/>) beside the EMA result.</summary>
    public const string LiveSuffix = "-live";

    /// <summary>
    /// NAME.safetensors (and NAME-diffusers with save_diffusers): the EMA weights when the run keeps them, else the live
    /// ones; with save_live_weights also NAME-live.safetensors, the live weights of this step. Each is a pruned file
    /// (the weights only, no EMA copy, no optimizer state), float16 with save_fp16.
    /// </summary>
    public override IReadOnlyList<string> Export(string runFolder, string name, long step)
    {
        using var noGrad = Autograd.NoGrad();
        // Export the averaged weights; the live ones go back afterwards so a resumed run is unchanged.
        var live = ema ? trained.ToDictionary(t => t.Name, t => t.Parameter.Detach().Clone().DetachFromDisposeScope()) : null;
        var outputs = new List<string>();
        try
        {
            if (ema)
                foreach (var (n, p) in trained) p.Copy_(shadow[n]);
            var file = Path.Combine(runFolder, name + ".safetensors");
            ModelExport.SaveSingleFile(Model, file, Config.SaveFp16);
            outputs.Add(file);
            if (Config.SaveDiffusers)
            {
                var folder = Path.Combine(runFolder, name + "-diffusers");
                ModelExport.SaveDiffusersFolder(Model, folder, Config.SaveFp16);
                outputs.Add(folder);
            }
        }
        finally
        {
            if (live is not null)
                foreach (var (n, p) in trained)
                {
                    p.Copy_(live[n]);
                    live[n].Dispose();
                }
        }
        if (ema && Config.SaveLiveWeights)
        {
            // The live weights are back in the model now.
            var liveFile = Path.Combine(runFolder, name + LiveSuffix + ".safetensors");
            ModelExport.SaveSingleFile(Model, liveFile, Config.SaveFp16);
            outputs.Add(liveFile);
        }
        return outputs;
    }

    public override void Dispose()
    {
        foreach (var t in shadow.Values) t.Dispose();
        shadow.Clear();
    }
}
