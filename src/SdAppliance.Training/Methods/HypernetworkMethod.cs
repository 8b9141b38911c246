using System.Globalization;
using SdAppliance.Formats.Adapters;
using SdAppliance.Models.Adapters;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;

namespace SdAppliance.Training.Methods;

/// <summary>An A1111 hypernetwork on the cross-attention keys and values.</summary>
public sealed class HypernetworkMethod : TrainingMethod
{
    private readonly Hypernetwork network;

    public HypernetworkMethod(StableDiffusionModel model, TrainingConfig config, Generator generator) : base(model, config)
    {
        var layers = config.HypernetworkLayerStructure.Split(',').Select(l => double.Parse(l, CultureInfo.InvariantCulture)).ToArray();
        network = Hypernetwork.Create(model, new HypernetworkOptions(layers, config.HypernetworkActivation), config.OutputName ?? "hypernetwork", generator);
    }

    public override IReadOnlyList<(IReadOnlyList<Tensor>, double)> ParameterGroups => [(network.TrainableParameters, Config.ScaledLearningRate())];

    public override IReadOnlyDictionary<string, Tensor> TrainedState() => network.StateDict();

    public override IReadOnlyList<string> Export(string runFolder, string name, long step)
    {
        var path = Path.Combine(runFolder, name + ".pt");
        network.SavePt(path, (int)step, A1111CheckpointHash(), Model.Name);
        return [path];
    }

    public override void Dispose()
    {
        network.Detach();
        network.Dispose();
    }
}
