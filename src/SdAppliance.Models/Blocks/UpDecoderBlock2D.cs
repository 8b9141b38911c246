using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Blocks;

/// <summary>A VAE decoder level, as diffusers' <c>UpDecoderBlock2D</c>: <c>resnets.N</c> (no skip tensors), then <c>upsamplers.0</c>.</summary>
public sealed class UpDecoderBlock2D : Module<Tensor, Tensor>, IGradientCheckpointing
{
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly Upsample2D? upsampler;

    public UpDecoderBlock2D(long inChannels, long outChannels, int numLayers = 1, double dropout = 0, double resnetEps = 1e-6,
        string resnetActFn = "swish", long resnetGroups = 32, double outputScaleFactor = 1.0, bool addUpsample = true,
        long? tembChannels = null, ModuleOptions? options = null)
    {
        var o = options ?? ModuleOptions.Default;
        var list = new List<ResnetBlock2D>();
        for (var i = 0; i < numLayers; i++)
            list.Add(new ResnetBlock2D(i == 0 ? inChannels : outChannels, outChannels, tembChannels, resnetGroups, eps: resnetEps,
                dropout: dropout, nonLinearity: resnetActFn, outputScaleFactor: outputScaleFactor, options: o));
        resnets = RegisterModule("resnets", new ModuleList<ResnetBlock2D>(list));
        if (addUpsample)
        {
            upsampler = new Upsample2D(outChannels, outChannels, options: o);
            RegisterModule("upsamplers", new ModuleList<Upsample2D>(upsampler));
        }
    }

    public bool GradientCheckpointing { get; set; }

    public override Tensor Forward(Tensor input) => Forward(input, null);

    public Tensor Forward(Tensor input, Tensor? temb)
    {
        using var scope = torch.NewDisposeScope();
        var hiddenStates = Chain(input, resnets, (resnet, h) => Checkpointing.Call(GradientCheckpointing, resnet.Forward, h, temb));
        if (upsampler is not null) hiddenStates = upsampler.Forward(hiddenStates);
        return scope.MoveToOuterScope(hiddenStates);
    }
}
