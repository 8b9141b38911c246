using SdAppliance.Models.Loading;
using SdAppliance.Torch;
using SdAppliance.Training.Exports;
using SdAppliance.Training.Networks;

namespace SdAppliance.Training.Methods;

/// <summary>LoRA (and LoCon with conv_dim) on the UNet and optionally the text encoder(s), base weights frozen.</summary>
public sealed class LoraMethod : TrainingMethod
{
    private readonly LoraNetwork network;
    private readonly KohyaLoraExport.KohyaSession session = KohyaLoraExport.KohyaSession.Start();

    public LoraMethod(StableDiffusionModel model, TrainingConfig config, Generator generator) : base(model, config)
    {
        network = LoraNetwork.Create(model, new LoraNetworkOptions(config.NetworkDim, config.NetworkAlpha, config.NetworkDropout,
            TrainUnet: true, TrainTextEncoder: config.TrainTextEncoder, config.ConvDim, config.ConvAlpha), generator);
    }

    public override IReadOnlyList<(IReadOnlyList<Tensor>, double)> ParameterGroups =>
        Config.TrainTextEncoder
            ? [(network.UnetParameters, Config.ScaledLearningRate()), (network.TextEncoderParameters, Config.ScaledTextEncoderLr())]
            : [(network.UnetParameters, Config.ScaledLearningRate())];

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
