using System.Globalization;
using SdAppliance.Formats.Adapters;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;
using SdAppliance.Training.Exports;
using SdAppliance.Training.Networks;

namespace SdAppliance.Training.Methods;

/// <summary>
/// LoRA (and LoCon with conv_dim, LyCORIS's LoHa/LoKr with network_algo, DoRA with dora_wd) on the UNet and optionally
/// the text encoder(s), base weights frozen. The optimizer's groups are kohya's <c>prepare_optimizer_params</c>: the
/// text encoder's, then the UNet's (one per block with block-wise learning rates), each split in two with LoRA+ (the
/// lora_up weights at ratio × the group's rate).
/// </summary>
public sealed class LoraMethod : TrainingMethod
{
    private readonly LoraNetwork network;
    private readonly KohyaLoraExport.KohyaSession session = KohyaLoraExport.KohyaSession.Start();
    private readonly double[]? blockLrWeights;

    public LoraMethod(StableDiffusionModel model, TrainingConfig config, Generator generator) : base(model, config)
    {
        var isSdxl = model.TextEncoder2 is not null;
        blockLrWeights = LoraBlocks.LrWeights(isSdxl, config.DownLrWeight, config.MidLrWeight, config.UpLrWeight, config.BlockLrZeroThreshold);
        network = LoraNetwork.Create(model, NetworkOptions(config, isSdxl), generator);
    }

    public LoraNetwork Network => network;

    /// <summary>
    /// The network a run's settings make, by kohya's <c>create_network</c>: block_dims/block_alphas (default network_dim
    /// and network_alpha for every block) when either they or block-wise learning rates are given, conv_block_dims (else
    /// conv_dim for every block), and the blocks whose learning-rate weight is 0 left without modules.
    /// </summary>
    /// <exception cref="TrainingConfigException">A block list whose length is not the model's block count, naming it.</exception>
    public static LoraNetworkOptions NetworkOptions(TrainingConfig config, bool isSdxl)
    {
        ArgumentNullException.ThrowIfNull(config);
        var options = new LoraNetworkOptions(config.NetworkDim, config.NetworkAlpha, config.NetworkDropout,
            TrainUnet: true, TrainTextEncoder: config.TrainTextEncoder, config.ConvDim, config.ConvAlpha)
        {
            Algorithm = TrainingConfig.NetworkAlgoChoices.Parse(config.NetworkAlgo),
            LokrFactor = config.LokrFactor,
            LokrDecomposeBoth = config.LokrDecomposeBoth,
            WeightDecompose = config.DoraWd,
            UseTucker = config.UseTucker,
            ExtraArgs = NetworkArgs(config),
        };
        var lrWeights = LoraBlocks.LrWeights(isSdxl, config.DownLrWeight, config.MidLrWeight, config.UpLrWeight, config.BlockLrZeroThreshold);
        if (config.BlockDims is null && lrWeights is null) return options;

        var count = LoraBlocks.Count(isSdxl);
        int[] Ranks(string? text, string field, int fallback) =>
            text is null ? Enumerable.Repeat(fallback, count).ToArray() : [.. LoraBlocks.PerBlock(text, field, isSdxl, whole: true).Select(v => (int)v)];
        double[] Alphas(string? text, string field, double fallback) =>
            text is null ? Enumerable.Repeat(fallback, count).ToArray() : LoraBlocks.PerBlock(text, field, isSdxl, whole: false);
        var dims = Ranks(config.BlockDims, "block_dims", config.NetworkDim);
        var alphas = Alphas(config.BlockAlphas, "block_alphas", config.NetworkAlpha);
        int[]? convDims = config.ConvBlockDims is not null ? Ranks(config.ConvBlockDims, "conv_block_dims", 0)
            : config.ConvDim is { } convDim ? Enumerable.Repeat(convDim, count).ToArray() : null;
        var convAlphas = convDims is null ? null : Alphas(config.ConvBlockAlphas, "conv_block_alphas", config.ConvAlpha ?? 1.0);
        // kohya's remove_block_dims_and_alphas: a block that would not learn gets no modules.
        if (lrWeights is not null)
            for (var i = 0; i < count; i++)
                if (lrWeights[i] == 0)
                {
                    dims[i] = 0;
                    if (convDims is not null) convDims[i] = 0;
                }
        return options with { BlockDims = dims, BlockAlphas = alphas, ConvBlockDims = convDims, ConvBlockAlphas = convAlphas };
    }

    // kohya records every --network_args item in ss_network_args as the user typed it; these are ours beyond conv_dim/alpha.
    private static Dictionary<string, string> NetworkArgs(TrainingConfig config)
    {
        string F(double v) => v.ToString("R", CultureInfo.InvariantCulture);
        var args = new Dictionary<string, string>(StringComparer.Ordinal);
        if (config.NetworkAlgo != "lora" || config.DoraWd) args["algo"] = config.NetworkAlgo;
        if (config.NetworkAlgo == "lokr" && config.LokrFactor != -1) args["factor"] = config.LokrFactor.ToString(CultureInfo.InvariantCulture);
        if (config.LokrDecomposeBoth) args["decompose_both"] = "True";
        if (config.UseTucker) args["use_tucker"] = "True";
        if (config.DoraWd) args["dora_wd"] = "True";
        foreach (var (key, value) in new[]
        {
            ("down_lr_weight", config.DownLrWeight), ("mid_lr_weight", config.MidLrWeight), ("up_lr_weight", config.UpLrWeight),
            ("block_dims", config.BlockDims), ("block_alphas", config.BlockAlphas), ("conv_block_dims", config.ConvBlockDims),
            ("conv_block_alphas", config.ConvBlockAlphas),
            ("loraplus_lr_ratio", config.LoraplusLrRatio is { } r ? F(r) : null),
            ("loraplus_unet_lr_ratio", config.LoraplusUnetLrRatio is { } u ? F(u) : null),
            ("loraplus_text_encoder_lr_ratio", config.LoraplusTextEncoderLrRatio is { } t ? F(t) : null),
        })
            if (value is not null) args[key] = value;
        if (config.BlockLrZeroThreshold != 0) args["block_lr_zero_threshold"] = F(config.BlockLrZeroThreshold);
        return args;
    }

    public override IReadOnlyList<(IReadOnlyList<Tensor>, double)> ParameterGroups
    {
        get
        {
            var groups = new List<(IReadOnlyList<Tensor>, double)>();
            if (Config.TrainTextEncoder)
                groups.AddRange(Split(network.TextEncoderModules, Config.ScaledTextEncoderLr(), Config.LoraplusTextEncoderLrRatio ?? Config.LoraplusLrRatio));
            var unetRatio = Config.LoraplusUnetLrRatio ?? Config.LoraplusLrRatio;
            if (blockLrWeights is null)
                groups.AddRange(Split(network.UnetModules, Config.ScaledLearningRate(), unetRatio));
            else
                // kohya: one group per block, in the order the blocks' first modules come, at lr × the block's weight.
                foreach (var block in network.UnetModules.GroupBy(network.BlockOf))
                    groups.AddRange(Split([.. block], Config.ScaledLearningRate() * (block.Key >= 0 ? blockLrWeights[block.Key] : 1.0), unetRatio));
            return groups;
        }
    }

    /// <summary>
    /// One group's modules at <paramref name="lr"/>: kohya's assemble_params, which with a LoRA+ <paramref name="ratio"/>
    /// moves the lora_up weights into a second group at lr × ratio.
    /// </summary>
    private static IEnumerable<(IReadOnlyList<Tensor>, double)> Split(IReadOnlyList<NetworkModule> modules, double lr, double? ratio)
    {
        if (ratio is not { } r)
        {
            yield return ([.. modules.SelectMany(m => m.Parameters())], lr);
            yield break;
        }
        var plus = modules.SelectMany(m => m.PlusParameters).ToHashSet(ReferenceEqualityComparer.Instance);
        yield return ([.. modules.SelectMany(m => m.Parameters()).Where(p => !plus.Contains(p))], lr);
        yield return ([.. modules.SelectMany(m => m.PlusParameters)], lr * r);
    }

    public override bool TrainsTextConditioning => Config.TrainTextEncoder;

    public override IReadOnlyDictionary<string, Tensor> TrainedState() => network.StateDict();

    public override IReadOnlyList<string> Export(string runFolder, string name, long step)
    {
        var path = Path.Combine(runFolder, name + ".safetensors");
        var metadata = KohyaLoraExport.Metadata(Model, Config, network.Options, name, step, session);
        if (TrainedOn is { } run)
            foreach (var (key, value) in KohyaLoraExport.DatasetMetadata(run.Dataset, Config, run.Epoch)) metadata[key] = value;
        KohyaLoraExport.Save(network, path, metadata, Config.SaveFp16 ? DType.Float16 : null);
        return [path];
    }

    public override void Dispose()
    {
        network.Detach();
        network.Dispose();
    }
}
