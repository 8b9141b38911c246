using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Blocks;


/// <summary>
/// A UNet up level without attention, as diffusers' <c>UpBlock2D</c>: each of <c>resnets.N</c>
/// takes the previous output concatenated (channels) with one skip tensor, then
/// <c>upsamplers.0</c>.
/// </summary>
public sealed class UpBlock2D : Module, IUNetUpBlock
{
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly Upsample2D? upsampler;

    /// <param name="inChannels">Channels of the deepest skip tensor this level takes (the last resnet's).</param>
    /// <param name="prevOutputChannels">Channels coming from the level below.</param>
    public UpBlock2D(long inChannels, long prevOutputChannels, long outChannels, long tembChannels, int numLayers = 1,
        double dropout = 0, double resnetEps = 1e-6, string resnetActFn = "swish", long resnetGroups = 32,
        double outputScaleFactor = 1.0, bool addUpsample = true, ModuleOptions? options = null)
    {
        var o = options ?? ModuleOptions.Default;
        var list = new List<ResnetBlock2D>();
        for (var i = 0; i < numLayers; i++)
        {
            var skipChannels = i == numLayers - 1 ? inChannels : outChannels;
            var resnetIn = i == 0 ? prevOutputChannels : outChannels;
            list.Add(new ResnetBlock2D(resnetIn + skipChannels, outChannels, tembChannels, resnetGroups, eps: resnetEps,
                dropout: dropout, nonLinearity: resnetActFn, outputScaleFactor: outputScaleFactor, options: o));
        }
        resnets = RegisterModule("resnets", new ModuleList<ResnetBlock2D>(list));
        if (addUpsample)
        {
            upsampler = new Upsample2D(outChannels, outChannels, options: o);
            RegisterModule("upsamplers", new ModuleList<Upsample2D>(upsampler));
        }
    }

    public bool GradientCheckpointing { get; set; }

    public int ResnetCount => resnets.Count;

    public Tensor Forward(Tensor hiddenStates, IReadOnlyList<Tensor> resSamples, Tensor? temb, Tensor? encoderHiddenStates, long[]? upsampleSize)
    {
        if (resSamples.Count != resnets.Count)
            throw new ArgumentException($"this up block takes {resnets.Count} skip tensors, got {resSamples.Count}", nameof(resSamples));
        using var scope = torch.NewDisposeScope();
        for (var i = 0; i < resnets.Count; i++)
        {
            hiddenStates = torch.Cat([hiddenStates, resSamples[^(i + 1)]], 1);
            hiddenStates = Checkpointing.Call(GradientCheckpointing, resnets[i].Forward, hiddenStates, temb);
        }
        if (upsampler is not null) hiddenStates = upsampler.Forward(hiddenStates, upsampleSize);
        return scope.MoveToOuterScope(hiddenStates);
    }
}
