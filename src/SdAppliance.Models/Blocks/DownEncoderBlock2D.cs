using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Blocks;

/// <summary>A VAE encoder level, as diffusers' <c>DownEncoderBlock2D</c>: <c>resnets.N</c> (no time embedding), then <c>downsamplers.0</c>.</summary>
public sealed class DownEncoderBlock2D : Module<Tensor, Tensor>, IGradientCheckpointing
{
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly Downsample2D? downsampler;

    public DownEncoderBlock2D(long inChannels, long outChannels, int numLayers = 1, double dropout = 0, double resnetEps = 1e-6,
        string resnetActFn = "swish", long resnetGroups = 32, double outputScaleFactor = 1.0, bool addDownsample = true,
        long downsamplePadding = 1, ModuleOptions? options = null)
    {
        var o = options ?? ModuleOptions.Default;
        var list = new List<ResnetBlock2D>();
        for (var i = 0; i < numLayers; i++)
            list.Add(new ResnetBlock2D(i == 0 ? inChannels : outChannels, outChannels, null, resnetGroups, eps: resnetEps,
                dropout: dropout, nonLinearity: resnetActFn, outputScaleFactor: outputScaleFactor, options: o));
        resnets = RegisterModule("resnets", new ModuleList<ResnetBlock2D>(list));
        if (addDownsample)
        {
            downsampler = new Downsample2D(outChannels, outChannels, downsamplePadding, options: o);
            RegisterModule("downsamplers", new ModuleList<Downsample2D>(downsampler));
        }
    }

    public bool GradientCheckpointing { get; set; }

    public override Tensor Forward(Tensor input)
    {
        using var scope = torch.NewDisposeScope();
        var hiddenStates = Chain(input, resnets, (resnet, h) => Checkpointing.Call(GradientCheckpointing, resnet.Forward, h, null));
        if (downsampler is not null) hiddenStates = downsampler.Forward(hiddenStates);
        return scope.MoveToOuterScope(hiddenStates);
    }
}
