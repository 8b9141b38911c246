using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Blocks;

/// <summary>A UNet down level without attention, as diffusers' <c>DownBlock2D</c>: <c>resnets.N</c>, then <c>downsamplers.0</c>.</summary>
public sealed class DownBlock2D : Module, IUNetDownBlock
{
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly Downsample2D? downsampler;

    public DownBlock2D(long inChannels, long outChannels, long tembChannels, int numLayers = 1, double dropout = 0,
        double resnetEps = 1e-6, string resnetActFn = "swish", long resnetGroups = 32, double outputScaleFactor = 1.0,
        bool addDownsample = true, long downsamplePadding = 1, ModuleOptions? options = null)
    {
        var o = options ?? ModuleOptions.Default;
        var list = new List<ResnetBlock2D>();
        for (var i = 0; i < numLayers; i++)
            list.Add(new ResnetBlock2D(i == 0 ? inChannels : outChannels, outChannels, tembChannels, resnetGroups, eps: resnetEps,
                dropout: dropout, nonLinearity: resnetActFn, outputScaleFactor: outputScaleFactor, options: o));
        resnets = RegisterModule("resnets", new ModuleList<ResnetBlock2D>(list));
        if (addDownsample)
        {
            downsampler = new Downsample2D(outChannels, outChannels, downsamplePadding, options: o);
            RegisterModule("downsamplers", new ModuleList<Downsample2D>(downsampler));
        }
    }

    public bool GradientCheckpointing { get; set; }

    public (Tensor Hidden, List<Tensor> ResSamples) Forward(Tensor hiddenStates, Tensor? temb, Tensor? encoderHiddenStates = null)
    {
        using var scope = torch.NewDisposeScope();
        var outputStates = new List<Tensor>();
        foreach (var resnet in resnets)
        {
            hiddenStates = Checkpointing.Call(GradientCheckpointing, resnet.Forward, hiddenStates, temb);
            outputStates.Add(hiddenStates);
        }
        if (downsampler is not null)
        {
            hiddenStates = downsampler.Forward(hiddenStates);
            outputStates.Add(hiddenStates);
        }
        return (scope.MoveToOuterScope(hiddenStates), scope.MoveToOuterScope(outputStates));
    }
}
