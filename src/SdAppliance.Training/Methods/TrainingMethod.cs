using System.Globalization;
using SdAppliance.Models.Adapters;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using SdAppliance.Torch.Serialization;
using SdAppliance.Training.Exports;
using SdAppliance.Training.Networks;

namespace SdAppliance.Training.Methods;

/// <summary>
/// What a fine-tuning method trains and how it saves it: the parameter groups, whether the text
/// encoder must run with gradients, the state a checkpoint holds, and the result files.
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

    /// <summary>The trained values, by name, for checkpoints (resume reads them back).</summary>
    public abstract IReadOnlyDictionary<string, Tensor> TrainedState();

    public void SaveState(string file) => Safetensors.Save(file, TrainedState());

    public virtual void LoadState(string file)
    {
        using var reader = SafetensorsReader.Open(file);
        using var noGrad = Autograd.NoGrad();
        foreach (var (name, target) in TrainedState())
        {
            if (!reader.Contains(name)) throw new InvalidDataException($"checkpoint '{file}' lacks '{name}'; it was made by another method or model");
            using var value = reader.Get(name);
            target.Copy_(value);
        }
    }

    /// <summary>Called after each optimizer step (EMA).</summary>
    public virtual void AfterOptimizerStep(long step) { }

    /// <summary>Writes the results into the run folder; returns their paths.</summary>
    public abstract IReadOnlyList<string> Export(string runFolder, string name, long step);

    public virtual void Dispose() { }

    public static TrainingMethod Create(StableDiffusionModel model, TrainingConfig config, Generator generator) => config.Method switch
    {
        "lora" => new LoraMethod(model, config, generator),
        "dreambooth" => new FullMethod(model, config, ema: false),
        "finetune" => new FullMethod(model, config, ema: config.UseEma),
        "textual-inversion" => new TextualInversionMethod(model, config),
        "hypernetwork" => new HypernetworkMethod(model, config, generator),
        _ => throw new TrainingConfigException($"method: '{config.Method}' is not one of {string.Join(", ", TrainingConfig.Methods)}"),
    };

    protected static string Stamp(long step) => step.ToString(CultureInfo.InvariantCulture);
}

/// <summary>LoRA (and LoCon with conv_dim) on the UNet and optionally the text encoder(s), base weights frozen.</summary>
public sealed class LoraMethod : TrainingMethod
{
    private readonly LoraNetwork network;

    public LoraMethod(StableDiffusionModel model, TrainingConfig config, Generator generator) : base(model, config)
    {
        network = LoraNetwork.Create(model, new LoraNetworkOptions(config.NetworkDim, config.NetworkAlpha, config.NetworkDropout,
            TrainUnet: true, TrainTextEncoder: config.TrainTextEncoder, config.ConvDim, config.ConvAlpha), generator);
    }

    public override IReadOnlyList<(IReadOnlyList<Tensor>, double)> ParameterGroups =>
        Config.TrainTextEncoder
            ? [(network.UnetParameters, Config.LearningRate), (network.TextEncoderParameters, Config.TextEncoderLr ?? Config.LearningRate)]
            : [(network.UnetParameters, Config.LearningRate)];

    public override bool TrainsTextConditioning => Config.TrainTextEncoder;

    public override IReadOnlyDictionary<string, Tensor> TrainedState() => network.StateDict();

    public override IReadOnlyList<string> Export(string runFolder, string name, long step)
    {
        var path = Path.Combine(runFolder, name + ".safetensors");
        network.Save(path, Metadata(name, step), Config.SaveFp16 ? DType.Float16 : null);
        return [path];
    }

    /// <summary>kohya's minimum keys plus the training settings kohya records (all values strings, as kohya writes them).</summary>
    private Dictionary<string, string> Metadata(string name, long step)
    {
        var m = KohyaMetadata.Build(Model, network.Options);
        string F(double v) => KohyaMetadata.PythonFloat(v);
        m["ss_output_name"] = name;
        m["ss_sd_model_name"] = Model.Name;
        m["ss_learning_rate"] = F(Config.LearningRate);
        m["ss_text_encoder_lr"] = F(Config.TextEncoderLr ?? Config.LearningRate);
        m["ss_unet_lr"] = F(Config.LearningRate);
        m["ss_max_train_steps"] = Config.MaxTrainSteps.ToString(CultureInfo.InvariantCulture);
        m["ss_steps"] = step.ToString(CultureInfo.InvariantCulture);
        m["ss_lr_scheduler"] = Config.LrScheduler;
        m["ss_lr_warmup_steps"] = Config.LrWarmupSteps.ToString(CultureInfo.InvariantCulture);
        m["ss_optimizer"] = Config.Optimizer;
        m["ss_seed"] = Config.Seed.ToString(CultureInfo.InvariantCulture);
        m["ss_resolution"] = $"({Config.Resolution}, {Config.Resolution})";
        m["ss_batch_size_per_device"] = Config.TrainBatchSize.ToString(CultureInfo.InvariantCulture);
        m["ss_gradient_accumulation_steps"] = Config.GradientAccumulationSteps.ToString(CultureInfo.InvariantCulture);
        m["ss_gradient_checkpointing"] = Config.GradientCheckpointing ? "True" : "False";
        m["ss_mixed_precision"] = Config.MixedPrecision;
        m["ss_max_grad_norm"] = F(Config.MaxGradNorm);
        m["ss_clip_skip"] = Config.ClipSkip.ToString(CultureInfo.InvariantCulture);
        m["ss_noise_offset"] = F(Config.NoiseOffset);
        m["ss_min_snr_gamma"] = Config.MinSnrGamma is { } g ? F(g) : "None";
        m["ss_prior_loss_weight"] = F(Config.PriorLossWeight);
        m["ss_enable_bucket"] = Config.EnableBucket ? "True" : "False";
        m["ss_flip_aug"] = Config.FlipAug ? "True" : "False";
        m["ss_shuffle_caption"] = Config.ShuffleCaption ? "True" : "False";
        m["ss_keep_tokens"] = Config.KeepTokens.ToString(CultureInfo.InvariantCulture);
        m["ss_caption_dropout_rate"] = F(Config.CaptionDropoutRate);
        m["ss_training_finished_at"] = DateTimeOffset.UtcNow.ToUnixTimeSeconds().ToString(CultureInfo.InvariantCulture);
        return m;
    }

    public override void Dispose()
    {
        network.Detach();
        network.Dispose();
    }
}

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
            return te.Count == 0 ? [(unet, Config.LearningRate)] : [(unet, Config.LearningRate), (te, Config.TextEncoderLr ?? Config.LearningRate)];
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

    public override IReadOnlyList<string> Export(string runFolder, string name, long step)
    {
        using var noGrad = Autograd.NoGrad();
        // Export the averaged weights; the live ones go back afterwards so a resumed run is unchanged.
        var live = ema ? trained.ToDictionary(t => t.Name, t => t.Parameter.Detach().Clone().DetachFromDisposeScope()) : null;
        try
        {
            if (ema)
                foreach (var (n, p) in trained) p.Copy_(shadow[n]);
            var file = Path.Combine(runFolder, name + ".safetensors");
            ModelExport.SaveSingleFile(Model, file, Config.SaveFp16);
            var outputs = new List<string> { file };
            if (Config.SaveDiffusers)
            {
                var folder = Path.Combine(runFolder, name + "-diffusers");
                ModelExport.SaveDiffusersFolder(Model, folder, Config.SaveFp16);
                outputs.Add(folder);
            }
            return outputs;
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
    }

    public override void Dispose()
    {
        foreach (var t in shadow.Values) t.Dispose();
        shadow.Clear();
    }
}

/// <summary>Textual inversion: only the new token's vectors change; the rest of the embedding matrix stays bit-identical.</summary>
public sealed class TextualInversionMethod : TrainingMethod
{
    private readonly TrainableEmbedding embedding;
    private readonly TextualInversionEmbedding view;

    public TextualInversionMethod(StableDiffusionModel model, TrainingConfig config) : base(model, config)
    {
        embedding = TrainableEmbedding.Create(model, config.PlaceholderToken!, config.InitializerToken!, config.NumVectors);
        view = embedding.AsEmbedding();
    }

    public override IReadOnlyList<(IReadOnlyList<Tensor>, double)> ParameterGroups =>
        [(embedding.Vectors2 is null ? [embedding.Vectors] : [embedding.Vectors, embedding.Vectors2], Config.LearningRate)];

    public override bool TrainsTextConditioning => true;

    public override IReadOnlyList<TextualInversionEmbedding> Embeddings => [view];

    public override IReadOnlyDictionary<string, Tensor> TrainedState()
    {
        var state = new Dictionary<string, Tensor> { ["vectors"] = embedding.Vectors };
        if (embedding.Vectors2 is not null) state["vectors2"] = embedding.Vectors2;
        return state;
    }

    public override IReadOnlyList<string> Export(string runFolder, string name, long step)
    {
        var token = embedding.PlaceholderToken;
        var safetensors = Path.Combine(runFolder, token + ".safetensors");
        var pt = Path.Combine(runFolder, token + ".pt");
        var diffusers = Path.Combine(runFolder, "learned_embeds.safetensors");
        EmbeddingExport.SaveA1111Safetensors(safetensors, view);
        EmbeddingExport.SaveA1111Pt(pt, view, (int)step, "", Model.Name);
        EmbeddingExport.SaveDiffusers(diffusers, view);
        return [safetensors, pt, diffusers];
    }

    public override void Dispose() => embedding.Dispose();
}

/// <summary>An A1111 hypernetwork on the cross-attention keys and values.</summary>
public sealed class HypernetworkMethod : TrainingMethod
{
    private readonly Hypernetwork network;

    public HypernetworkMethod(StableDiffusionModel model, TrainingConfig config, Generator generator) : base(model, config)
    {
        var layers = config.HypernetworkLayerStructure.Split(',').Select(l => double.Parse(l, CultureInfo.InvariantCulture)).ToArray();
        network = Hypernetwork.Create(model, new HypernetworkOptions(layers, config.HypernetworkActivation), config.OutputName ?? "hypernetwork", generator);
    }

    public override IReadOnlyList<(IReadOnlyList<Tensor>, double)> ParameterGroups => [(network.TrainableParameters, Config.LearningRate)];

    public override IReadOnlyDictionary<string, Tensor> TrainedState() => network.StateDict();

    public override IReadOnlyList<string> Export(string runFolder, string name, long step)
    {
        var path = Path.Combine(runFolder, name + ".pt");
        network.SavePt(path, (int)step, "", Model.Name);
        return [path];
    }

    public override void Dispose()
    {
        network.Detach();
        network.Dispose();
    }
}
