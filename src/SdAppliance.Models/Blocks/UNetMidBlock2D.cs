using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Blocks;

/// <summary>
/// The VAE bottleneck, as diffusers' <c>UNetMidBlock2D</c>: <c>resnets.0</c>, then for each layer
/// a single-head self-attention over the whole image (<c>attentions.N</c>: group norm, linear
/// q/k/v/out, residual; heads = channels / <paramref name="attentionHeadDim"/>) and
/// <c>resnets.N+1</c>. Without attention (<paramref name="addAttention"/> false) the
/// attentions list stays empty, as diffusers' list of None holds no parameters.
/// </summary>
public sealed class UNetMidBlock2D : Module, IUNetMidBlock
{
    private readonly Attention?[] attentionLayers;
    private readonly ModuleList<ResnetBlock2D> resnets;

    public UNetMidBlock2D(long inChannels, long? tembChannels, int numLayers = 1, double dropout = 0, double resnetEps = 1e-6,
        string resnetActFn = "swish", long? resnetGroups = 32, bool addAttention = true, long? attentionHeadDim = 1,
        double outputScaleFactor = 1.0, ModuleOptions? options = null)
    {
        var o = options ?? ModuleOptions.Default;
        var groups = resnetGroups ?? Math.Min(inChannels / 4, 32);
        var headDim = attentionHeadDim ?? inChannels;
        var resnetList = new List<ResnetBlock2D> { NewResnet() };
        attentionLayers = new Attention?[numLayers];
        for (var i = 0; i < numLayers; i++)
        {
            if (addAttention)
                attentionLayers[i] = new Attention(inChannels, heads: inChannels / headDim, dimHead: headDim, bias: true,
                    upcastSoftmax: true, normNumGroups: groups, eps: resnetEps, residualConnection: true,
                    rescaleOutputFactor: outputScaleFactor, options: o);
            resnetList.Add(NewResnet());
        }
        // diffusers keeps None entries in the list; numbering stays aligned because it is all or nothing.
        RegisterModule("attentions", new ModuleList<Attention>(attentionLayers.OfType<Attention>()));
        resnets = RegisterModule("resnets", new ModuleList<ResnetBlock2D>(resnetList));

        ResnetBlock2D NewResnet() => new(inChannels, inChannels, tembChannels, groups, eps: resnetEps, dropout: dropout,
            nonLinearity: resnetActFn, outputScaleFactor: outputScaleFactor, options: o);
    }

    public bool GradientCheckpointing { get; set; }

    public Tensor Forward(Tensor hiddenStates, Tensor? temb = null) => Forward(hiddenStates, temb, null);

    public Tensor Forward(Tensor hiddenStates, Tensor? temb, Tensor? encoderHiddenStates)
    {
        using var scope = torch.NewDisposeScope();
        hiddenStates = Checkpointing.Call(GradientCheckpointing, resnets[0].Forward, hiddenStates, temb);
        for (var i = 0; i < attentionLayers.Length; i++)
        {
            if (attentionLayers[i] is { } attention) hiddenStates = attention.Forward(hiddenStates);
            hiddenStates = Checkpointing.Call(GradientCheckpointing, resnets[i + 1].Forward, hiddenStates, temb);
        }
        return scope.MoveToOuterScope(hiddenStates);
    }
}
