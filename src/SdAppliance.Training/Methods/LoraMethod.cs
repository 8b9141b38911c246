using System.Globalization;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;
using SdAppliance.Training.Networks;

namespace SdAppliance.Training.Methods;

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
