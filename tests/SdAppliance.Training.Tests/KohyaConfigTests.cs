using SdAppliance.Training.Kohya;

namespace SdAppliance.Training.Tests;

/// <summary>kohya training configs (a kohya_ss GUI JSON, an sd-scripts --config_file TOML) mapped onto run settings, every other key named.</summary>
public sealed class KohyaConfigTests
{
    /// <summary>
    /// The shape of a config the kohya_ss GUI saves: its LoRA preset "sd15 - EDG_LoraOptiSettings" key for key (numbers
    /// often as text, the GUI's own names epoch, max_resolution, optimizer, LoRA_type, lr_warmup), with the folder and sample
    /// keys a saved config adds and one key this trainer does not know.
    /// </summary>
    private const string GuiJson = """
        {
            "LoRA_type": "Standard",
            "additional_parameters": "",
            "block_alphas": "",
            "block_dims": "",
            "block_lr_zero_threshold": "",
            "bucket_no_upscale": true,
            "bucket_reso_steps": 64.0,
            "cache_latents": true,
            "caption_dropout_every_n_epochs": 0.0,
            "caption_dropout_rate": 0,
            "caption_extension": ".txt",
            "clip_skip": 2,
            "color_aug": false,
            "conv_alpha": 1,
            "conv_alphas": "",
            "conv_dim": 1,
            "conv_dims": "",
            "down_lr_weight": "",
            "enable_bucket": false,
            "epoch": 1,
            "flip_aug": false,
            "full_fp16": false,
            "gradient_accumulation_steps": 1.0,
            "gradient_checkpointing": false,
            "gpu_ids": "",
            "keep_tokens": "0",
            "learning_rate": "0.0001",
            "lora_network_weights": "",
            "lr_scheduler": "constant",
            "lr_scheduler_num_cycles": "",
            "lr_scheduler_power": "",
            "lr_warmup": "0",
            "max_data_loader_n_workers": "1",
            "max_resolution": "512,512",
            "max_token_length": "75",
            "max_train_epochs": "",
            "mem_eff_attn": true,
            "mid_lr_weight": "",
            "min_snr_gamma": 0,
            "main_process_port": 0,
            "mixed_precision": "bf16",
            "multi_gpu": false,
            "network_alpha": 64,
            "network_dim": 64,
            "no_token_padding": false,
            "noise_offset": "0.05",
            "num_cpu_threads_per_process": 2,
            "num_machines": 1,
            "num_processes": 1,
            "optimizer": "AdamW8bit",
            "optimizer_args": "",
            "persistent_data_loader_workers": false,
            "prior_loss_weight": 1.0,
            "random_crop": false,
            "save_every_n_epochs": 1,
            "save_precision": "bf16",
            "seed": "1234",
            "shuffle_caption": false,
            "stop_text_encoder_training": 0,
            "text_encoder_lr": "5e-05",
            "train_batch_size": 3,
            "training_comment": "",
            "unet_lr": "0.0001",
            "up_lr_weight": "",
            "v2": false,
            "v_parameterization": false,
            "vae_batch_size": 0,
            "xformers": true,
            "pretrained_model_name_or_path": "models/sd15.safetensors",
            "train_data_dir": "datasets/ink/img",
            "reg_data_dir": "",
            "output_dir": "runs/ink",
            "output_name": "inkstyle",
            "logging_dir": "runs/ink/log",
            "save_model_as": "safetensors",
            "sample_prompts": "ink drawing of a cat --w 512 --h 512\n\nink drawing of a dog --d 7",
            "sample_every_n_epochs": 1,
            "sample_sampler": "euler_a",
            "some_future_option": "on"
        }
        """;

    private const string SdScriptsToml = """
        [model_arguments]
        pretrained_model_name_or_path = "models/sd15.safetensors"
        v2 = false

        [dataset_arguments]
        train_data_dir = "train"
        reg_data_dir = "reg"
        resolution = "768,768"
        enable_bucket = true
        min_bucket_reso = 320
        max_bucket_reso = 1280
        bucket_reso_steps = 64
        caption_extension = ".caption"
        shuffle_caption = true
        keep_tokens = 1

        [training_arguments]
        output_dir = "out"
        output_name = "ink"
        max_train_steps = 1600
        train_batch_size = 2
        learning_rate = 1e-4
        unet_lr = 2e-4
        text_encoder_lr = 5e-5
        lr_scheduler = "cosine_with_restarts"
        lr_scheduler_num_cycles = 3
        lr_warmup_steps = 100
        optimizer_type = "PagedAdamW8bit"
        optimizer_args = ["weight_decay=0.1", "betas=0.9,0.99"]
        loss_type = "huber"
        huber_schedule = "exponential"
        huber_c = 0.2
        multires_noise_iterations = 6
        multires_noise_discount = 0.25
        ip_noise_gamma = 0.1
        mixed_precision = "bf16"
        seed = 7
        save_every_n_epochs = 2
        clip_skip = 2
        noise_offset = 0.05
        min_snr_gamma = 5
        xformers = true
        save_precision = "fp16"
        sample_prompts = "prompts.txt"
        sample_every_n_steps = 200
        gradient_checkpointing = true

        [network_arguments]
        network_module = "networks.lora"
        network_dim = 32
        network_alpha = 16
        network_args = ["conv_dim=8", "conv_alpha=4"]
        network_train_unet_only = false
        """;

    private static KohyaConfig ReadText(string name, string text)
    {
        using var folder = new DataTestFolder();
        return KohyaConfig.Read(folder.Text(name, text));
    }

    private static TrainingConfig Settings(KohyaConfig kohya) => TrainingConfig.FromSettings(kohya.Settings, "kohya");

    [Fact]
    public void AKohyaSsGuiConfigMapsOntoTheRunsSettings()
    {
        var kohya = ReadText("ink.json", GuiJson);
        var config = Settings(kohya);

        Assert.Equal("lora", config.Method);
        Assert.Equal("models/sd15.safetensors", config.Model);
        Assert.Equal("datasets/ink/img", config.Data);
        Assert.Null(config.ClassData);  // "" is unset
        Assert.Equal("runs/ink", config.Output);
        Assert.Equal("inkstyle", config.OutputName);
        Assert.Equal(1, config.MaxTrainEpochs);  // the GUI's epoch
        Assert.Equal(1e-4, config.LearningRate);  // "0.0001", as text
        Assert.Equal(5e-5, config.TextEncoderLr);
        Assert.True(config.TrainTextEncoder);  // kohya's LoRA trains the text encoder unless told not to
        Assert.Equal(64, config.NetworkDim);
        Assert.Equal(64, config.NetworkAlpha);
        Assert.Null(config.ConvDim);  // the GUI keeps conv_dim for every type: LoCon's only with "Kohya LoCon"
        Assert.Equal("AdamW8bit", config.Optimizer);
        Assert.Equal("constant", config.LrScheduler);
        Assert.Equal(0, config.LrWarmupSteps);
        Assert.Equal("bf16", config.MixedPrecision);
        Assert.Equal(512, config.Resolution);  // "512,512"
        Assert.Equal(3, config.TrainBatchSize);
        Assert.Equal(1, config.GradientAccumulationSteps);  // 1.0
        Assert.Equal(1234, config.Seed);  // "1234"
        Assert.Equal(1, config.NumProcesses);
        Assert.Equal(29500, config.MainProcessPort);  // 0 is accelerate's default
        Assert.Null(config.Devices);  // gpu_ids ""
        Assert.Equal(1, config.SaveEveryNEpochs);
        Assert.Equal(".txt", config.CaptionExtension);
        Assert.Equal(2, config.ClipSkip);
        Assert.Equal(0.05, config.NoiseOffset);
        Assert.Null(config.MinSnrGamma);  // 0 is off
        Assert.True(config.CacheLatents);
        Assert.True(config.CenterCrop);  // random_crop false
        Assert.False(config.EnableBucket);
        Assert.Equal(1, config.SampleEveryNEpochs);
        Assert.Equal("euler_a", config.SampleSampler);
        // The GUI's sample_prompts holds the prompts, a line each, blank lines dropped.
        Assert.Equal(["ink drawing of a cat --w 512 --h 512", "ink drawing of a dog --d 7"], config.SamplePrompts);
        Assert.Null(config.SamplePromptsFile);

        // Every key is accounted for: mapped, without effect, or named as not applied.
        Assert.Equal(["save_precision = \"bf16\": results are saved in float32, or float16 with save_fp16", "some_future_option = \"on\": not a setting this trainer knows"],
            kohya.NotApplied.Order(StringComparer.Ordinal));
        foreach (var key in new[] { "xformers", "mem_eff_attn", "bucket_no_upscale", "bucket_reso_steps", "conv_dim", "conv_alpha", "color_aug", "v2", "logging_dir", "block_dims", "reg_data_dir", "lr_warmup" })
            Assert.Contains(key, kohya.NoEffect);
    }

    [Fact]
    public void AnSdScriptsConfigFileMapsItsSectionsKeysOntoTheRunsSettings()
    {
        var kohya = ReadText("ink.toml", SdScriptsToml);
        var config = Settings(kohya);

        Assert.Equal("lora", config.Method);
        Assert.Equal("models/sd15.safetensors", config.Model);
        Assert.Equal("train", config.Data);
        Assert.Equal("reg", config.ClassData);
        Assert.Equal("out", config.Output);
        Assert.Equal("ink", config.OutputName);
        Assert.Equal(768, config.Resolution);
        Assert.True(config.EnableBucket);
        Assert.Equal(320, config.MinBucketReso);
        Assert.Equal(1280, config.MaxBucketReso);
        Assert.Equal(".caption", config.CaptionExtension);
        Assert.True(config.ShuffleCaption);
        Assert.Equal(1, config.KeepTokens);
        Assert.Equal(1600, config.MaxTrainSteps);
        Assert.Null(config.MaxTrainEpochs);
        Assert.Equal(2, config.TrainBatchSize);
        Assert.Equal(2e-4, config.LearningRate);  // unet_lr is the UNet's rate, our learning_rate
        Assert.Equal(5e-5, config.TextEncoderLr);
        Assert.True(config.TrainTextEncoder);
        Assert.Equal("cosine_with_restarts", config.LrScheduler);
        Assert.Equal(3, config.LrNumCycles);
        Assert.Equal(100, config.LrWarmupSteps);
        Assert.Equal("AdamW8bit", config.Optimizer);  // paging only moves the optimizer's state
        Assert.Contains("optimizer PagedAdamW8bit is AdamW8bit: the same update, its state not paged", kohya.Notes);
        Assert.Equal(("huber", "exponential", 0.2), (config.LossType, config.HuberSchedule, config.HuberC));
        Assert.Equal((6, 0.25, 0.1), (config.MultiresNoiseIterations, config.MultiresNoiseDiscount, config.IpNoiseGamma));
        Assert.Equal(0.1, config.AdamWeightDecay);
        Assert.Equal(0.9, config.AdamBeta1);
        Assert.Equal(0.99, config.AdamBeta2);
        Assert.Equal("bf16", config.MixedPrecision);
        Assert.Equal(7, config.Seed);
        Assert.Equal(2, config.SaveEveryNEpochs);
        Assert.Equal(2, config.ClipSkip);
        Assert.Equal(0.05, config.NoiseOffset);
        Assert.Equal(5, config.MinSnrGamma);
        Assert.True(config.SaveFp16);
        Assert.Equal("prompts.txt", config.SamplePromptsFile);  // sd-scripts' sample_prompts names a file
        Assert.Equal(200, config.SampleEveryNSteps);
        Assert.True(config.GradientCheckpointing);
        Assert.Equal(32, config.NetworkDim);
        Assert.Equal(16, config.NetworkAlpha);
        Assert.Equal(8, config.ConvDim);  // network_args: LoCon
        Assert.Equal(4, config.ConvAlpha);

        Assert.Empty(kohya.NotApplied);
        Assert.Contains("unet_lr 0.0002 is the learning rate (learning_rate 0.0001 is kohya's default for the parts without their own)", kohya.Notes);
        Assert.Equal(["v2", "bucket_reso_steps", "xformers"], kohya.NoEffect.Where(k => k is "v2" or "bucket_reso_steps" or "xformers"));
    }

    [Fact]
    public void LyCorisNetworksEightBitOptimizersAndLossOptionsMapOntoTheirSettings()
    {
        // sd-scripts: LyCORIS's LoKr with DoRA and block dims in network_args, a paged 8-bit optimizer, kohya's loss options.
        var toml = Settings(ReadText("lokr.toml", """
            network_module = "lycoris.kohya"
            network_args = ["algo=lokr", "factor=8", "decompose_both=True", "dora_wd=True", "conv_dim=4", "block_dims=4,4,4,4,4,4,4,4,4,4,4,4,8,4,4,4,4,4,4,4,4,4,4,4,4"]
            network_dim = 8
            optimizer_type = "PagedAdamW8bit"
            loss_type = "huber"
            huber_schedule = "exponential"
            huber_c = 0.2
            ip_noise_gamma = 0.1
            multires_noise_iterations = 6
            multires_noise_discount = 0.3
            masked_loss = true
            conditioning_data_dir = "masks"
            vae = "vae/sd-vae-ft-mse.safetensors"
            """));
        Assert.Equal(("lora", "lokr", 8, true, true, 4), (toml.Method, toml.NetworkAlgo, toml.LokrFactor, toml.LokrDecomposeBoth, toml.DoraWd, toml.ConvDim));
        Assert.Equal("4,4,4,4,4,4,4,4,4,4,4,4,8,4,4,4,4,4,4,4,4,4,4,4,4", toml.BlockDims);
        Assert.Equal("AdamW8bit", toml.Optimizer);
        Assert.Equal(("huber", "exponential", 0.2, 0.1, 6, 0.3), (toml.LossType, toml.HuberSchedule, toml.HuberC, toml.IpNoiseGamma, toml.MultiresNoiseIterations, toml.MultiresNoiseDiscount));
        Assert.Equal((true, "masks", "vae/sd-vae-ft-mse.safetensors"), (toml.MaskedLoss, toml.ConditioningDataDir, toml.Vae));

        // The kohya_ss GUI: LoHa by LoRA_type, block learning rates and LoRA+ as keys of their own, its 0 and "" as unset.
        var gui = ReadText("loha.json", """
            {"LoRA_type": "LyCORIS/LoHa", "conv_dim": 4, "conv_alpha": 2, "use_tucker": true, "factor": -1, "down_lr_weight": "sine", "up_lr_weight": "",
             "loraplus_lr_ratio": 16, "loraplus_unet_lr_ratio": 0, "optimizer": "Lion8bit", "multires_noise_iterations": 0, "ip_noise_gamma": 0}
            """);
        var config = Settings(gui);
        Assert.Equal(("lora", "loha", 4, 2, true), (config.Method, config.NetworkAlgo, config.ConvDim, config.ConvAlpha, config.UseTucker));
        Assert.Equal(("sine", null, 16.0, null), (config.DownLrWeight, config.UpLrWeight, config.LoraplusLrRatio, config.LoraplusUnetLrRatio));
        Assert.Equal("Lion8bit", config.Optimizer);
        Assert.Null(config.MultiresNoiseIterations);  // 0 is off
        Assert.Equal(0, config.IpNoiseGamma);
        Assert.Contains("factor", gui.NoEffect);  // LoKr's factor, and this is LoHa
        Assert.Empty(gui.NotApplied);

        var unknownAlgo = Assert.Throws<TrainingConfigException>(() => ReadText("ia3.toml", """
            network_module = "lycoris.kohya"
            network_args = ["algo=ia3"]
            """));
        Assert.Contains("network_args \"algo=ia3\" (LyCORIS's lora, locon, loha and lokr are trained here", unknownAlgo.Message);
    }

    [Fact]
    public void KeysThatWouldTrainSomethingElseAreRefusedTogetherByName()
    {
        var error = Assert.Throws<TrainingConfigException>(() => ReadText("x.toml", """
            network_module = "networks.dylora"
            min_timestep = 100
            optimizer_type = "DAdaptAdam"
            resolution = "512,768"
            color_aug = false
            bucket_no_upscale = true
            enable_bucket = true
            [more]
            max_timestep = 1000
            use_scalar = true
            """));
        Assert.Equal("kohya_config", error.Subject);
        var refused = error.Problem[(error.Problem.IndexOf("differently: ", StringComparison.Ordinal) + 13)..].Split("; ");
        Assert.Equal(
        [
            "min_timestep = 100 (timesteps are drawn from the whole range)",
            "bucket_no_upscale = true (small images are upscaled to their bucket here)",
            "use_scalar = true (LyCORIS's trained scalar is not supported)",
            "resolution = \"512,768\" (training sizes are square here: resolution is one side, and enable_bucket trains other aspect ratios at that area)",
            "network_module = \"networks.dylora\" (kohya's networks.lora and LyCORIS's lycoris.kohya with algo lora, locon, loha or lokr are trained here)",
            $"optimizer_type = \"DAdaptAdam\" (the optimizers here: {string.Join(", ", TrainingConfig.Optimizers)})",
            "remove these keys or set kohya's defaults",
        ], refused);
    }

    [Fact]
    public void TheGuisWarmupPercentageBecomesStepsWhenTheStepsAreKnown()
    {
        var kohya = ReadText("w.json", """{"max_train_steps": "1000", "lr_warmup": 5, "epoch": 10, "LoRA_type": "Kohya LoCon", "conv_dim": 8, "conv_alpha": 2, "text_encoder_lr": 0}""");
        var config = Settings(kohya);
        Assert.Equal(50, config.LrWarmupSteps);  // 5% of 1000
        Assert.Equal(1000, config.MaxTrainSteps);
        Assert.Null(config.MaxTrainEpochs);  // max_train_steps gives the length, as the GUI passes it
        Assert.Equal(8, config.ConvDim);
        Assert.Equal(2, config.ConvAlpha);
        Assert.False(config.TrainTextEncoder);  // a text encoder rate of 0 trains the UNet only

        var byEpochs = Assert.Throws<TrainingConfigException>(() => ReadText("e.json", """{"epoch": 10, "lr_warmup": 5}"""));
        Assert.Contains("lr_warmup = 5 (a percentage of steps the run counts from its epochs: give lr_warmup_steps instead)", byEpochs.Message);
    }

    [Fact]
    public void AConfigThatNamesNoNetworkLeavesTheMethodToTheRunAndSaysSo()
    {
        // A kohya_ss DreamBooth config: no LoRA_type, no network keys.
        var kohya = ReadText("db.json", """{"train_data_dir": "img", "learning_rate": "1e-6", "max_train_steps": "800", "train_batch_size": 2}""");
        Assert.False(kohya.Settings.ContainsKey("method"));
        Assert.False(kohya.Settings.ContainsKey("train_text_encoder"));
        Assert.Contains(kohya.Notes, n => n.StartsWith("the file names no network (network_module, LoRA_type) nor textual inversion word", StringComparison.Ordinal));
        var config = TrainingConfig.FromSettings(kohya.Settings, "kohya", new Dictionary<string, string> { ["method"] = "dreambooth" });
        Assert.Equal(("dreambooth", 1e-6, 800, 2), (config.Method, config.LearningRate, config.MaxTrainSteps, config.TrainBatchSize));
    }

    [Fact]
    public void KohyasFlagSpellingsAreAliasesOfTheSettings()
    {
        Assert.Equal("optimizer", KohyaConfig.FlagAliases["optimizer_type"]);
        Assert.Equal("data", KohyaConfig.FlagAliases["train_data_dir"]);
        Assert.Equal("model", KohyaConfig.FlagAliases["pretrained_model_name_or_path"]);
        Assert.Equal("class_data", KohyaConfig.FlagAliases["reg_data_dir"]);
        Assert.Equal("lr_num_cycles", KohyaConfig.FlagAliases["lr_scheduler_num_cycles"]);
        Assert.Equal("network_dim", KohyaConfig.FlagAliases["network_dim"]);
        Assert.Equal("sample_prompts_file", KohyaConfig.FlagAliases["sample_prompts"]);
        // Every alias names a setting.
        var fields = TrainingConfig.Fields.Select(TrainingConfig.FieldName).ToHashSet();
        Assert.All(KohyaConfig.FlagAliases.Values, f => Assert.Contains(f, fields));
    }
}
